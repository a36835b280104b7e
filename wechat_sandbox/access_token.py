"""Access tokens (api.weixin.qq.com ``cgi-bin/token`` and ``cgi-bin/stable_token``): two hours each,
the previous one honoured for a while after a new one is issued, as on WeChat.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from wechat_sandbox.core import WeChatFault, _stall, json_body, state, wechat_api

token_bp = Blueprint("sandbox_token", __name__)


@wechat_api(token_bp, "/cgi-bin/token", "GET")
def get_token() -> Response:
    args = request.args
    if args.get("grant_type") != "client_credential":
        raise WeChatFault(40002, "invalid grant_type")
    appid = state().check_credentials(args.get("appid"), args.get("secret"))
    _stall()
    token, expires_in = state().issue_token(appid)
    return jsonify(access_token=token, expires_in=expires_in)


@wechat_api(token_bp, "/cgi-bin/stable_token", "POST")
def get_stable_token() -> Response:
    body = json_body(WeChatFault(47001, "data format error"))
    if body.get("grant_type") != "client_credential":
        raise WeChatFault(40002, "invalid grant_type")
    appid = state().check_credentials(body.get("appid"), body.get("secret"))
    force = body.get("force_refresh", False)
    if not isinstance(force, bool):
        raise WeChatFault(47001, "data format error")
    _stall()
    token, expires_in = state().stable_token(appid, force)
    return jsonify(access_token=token, expires_in=expires_in)
