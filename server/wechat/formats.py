"""Facts of WeChat's wire formats that more than one module checks."""
import re

#: Characters WeChat allows in a mini-program code's ``scene`` (wxacode.getUnlimited).
SCENE_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$&'()*+,/:;=?@-._~"
SCENE_MAX_LENGTH = 32
SCENE_RE = re.compile(r"^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$")
