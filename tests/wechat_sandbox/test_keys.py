"""The WeChat Pay key pairs the sandbox generates once and the app in sandbox mode reads."""
from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from server.wechat.pay import load_private_key, load_public_key
from wechat_sandbox.keys import ensure_sandbox_keys


def test_sandbox_keys_are_generated_once_privately_and_agree_under_concurrency(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox-pay"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_sandbox_keys(directory).merchant_private)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    keys = ensure_sandbox_keys(directory)
    assert keys.complete()
    for path in (keys.merchant_private, keys.merchant_public, keys.platform_private, keys.platform_public):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    private = load_private_key(keys.merchant_private)
    public = load_public_key(keys.merchant_public)
    assert private.public_key().public_numbers() == public.public_numbers()
    before = keys.merchant_private.read_bytes()
    assert ensure_sandbox_keys(directory).merchant_private.read_bytes() == before  # never regenerated
    assert [p.name for p in tmp_path.iterdir()] == ["sandbox-pay"]  # no staging left behind


def test_a_key_directory_from_before_the_public_key_gets_its_pair_once_and_matching(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox-pay"
    keys = ensure_sandbox_keys(directory)
    keys.wechatpay_public_key_private.unlink()
    keys.wechatpay_public_key.unlink()
    merchant = keys.merchant_private.read_bytes()
    threads = [threading.Thread(target=ensure_sandbox_keys, args=(directory,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert keys.complete() and keys.merchant_private.read_bytes() == merchant
    private = load_private_key(keys.wechatpay_public_key_private)
    assert private.public_key().public_numbers() == load_public_key(keys.wechatpay_public_key).public_numbers()
    for path in (keys.wechatpay_public_key_private, keys.wechatpay_public_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # nothing staged left behind


def test_a_private_key_file_is_parsed_once_and_a_replaced_file_gives_the_new_key(tmp_path: Path) -> None:
    keys = ensure_sandbox_keys(tmp_path / "sandbox-pay")
    path = tmp_path / "apiclient_key.pem"
    path.write_bytes(keys.merchant_private.read_bytes())
    first = load_private_key(path)
    assert load_private_key(path) is first
    path.write_bytes(keys.platform_private.read_bytes())  # the merchant rotated its key
    rotated = load_private_key(path)
    assert rotated is not first
    assert rotated.public_key().public_numbers() == load_public_key(keys.platform_public).public_numbers()
    path.write_text("not a key")
    with pytest.raises(ValueError):
        load_private_key(path)
