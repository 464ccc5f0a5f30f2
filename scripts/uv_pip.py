"""Run ``uv pip ARGS`` with pip's own settings (used by scripts/setup.sh).

uv reads neither pip's configuration files nor ``PIP_*`` variables, so this
reads them the way pip does (``python -m pip config list``: a ``PIP_*``
variable over the ``[install]`` section over ``[global]``) and passes on those
that decide where packages come from: the index, extra indexes, find-links
locations, global constraint files, trusted hosts, the certificate bundle, the
proxy and the network timeout. pip picks the best version across all its
indexes; uv does the same with ``--index-strategy unsafe-best-match``.

Usage: python scripts/uv_pip.py install [uv pip install options ...]
Run with the Python whose environment has uv (``pip install uv``); exits with
uv's exit code (127 when uv is missing).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# pip option -> uv option; a list value gives the option once per item.
_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
_FLAGS = {"no-index": "--no-index"}
# pip option -> environment variable uv reads instead.
_ENVIRONMENT = {
    "cert": ("SSL_CERT_FILE",),
    "timeout": ("UV_HTTP_TIMEOUT",),
    "default-timeout": ("UV_HTTP_TIMEOUT",),
    "proxy": ("HTTP_PROXY", "HTTPS_PROXY"),
}
_INSTALLING = {"install", "compile", "sync"}


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """pip's effective settings for ``pip install``: option name -> raw value."""
    listing = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    ).stdout
    ranked: dict[str, tuple[int, str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in listing.splitlines():
        name, sep, value = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not (sep and dot) or section not in rank:
            continue
        try:
            text = str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            text = value.strip("'\"")
        if key not in ranked or rank[section] >= ranked[key][0]:
            ranked[key] = (rank[section], text)
    return {key: text for key, (_, text) in ranked.items()}


def translate(settings: dict[str, str]) -> tuple[list[list[str]], dict[str, str], list[str]]:
    """uv options (each a list: the option and its value, if any), environment
    variables, and the names of settings left out."""
    options: list[list[str]] = []
    environment: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in sorted(settings.items()):
        if key in _OPTIONS:
            options += [[_OPTIONS[key], item] for item in value.split()]
        elif key in _FLAGS:
            if value.strip().lower() in ("1", "true", "yes", "on"):
                options.append([_FLAGS[key]])
        elif key in _ENVIRONMENT:
            for variable in _ENVIRONMENT[key]:
                environment.setdefault(variable, value.strip())
        elif key not in ("config-file", "disable-pip-version-check", "no-cache-dir", "cache-dir"):
            ignored.append(key)
    return options, environment, ignored


def main(argv: list[str]) -> int:
    try:
        from uv import find_uv_bin
    except ImportError:
        print("[setup] uv is not installed in this environment", file=sys.stderr)
        return 127
    options, environment, ignored = translate(pip_settings())
    if "--require-hashes" in argv:
        # uv then wants every constraint pinned and hashed (pip does not); requirements
        # all pinned by hash and installed --no-deps have no use for constraints.
        options = [option for option in options if option[0] != "--constraint"]
    flat = [item for option in options for item in option]
    if argv and argv[0] in _INSTALLING:
        argv = [argv[0], *flat, "--index-strategy", "unsafe-best-match", *argv[1:]]
        shown = " ".join(flat) or "(none)"
        print(f"[setup] uv pip {argv[0]} with pip's settings: {shown}", file=sys.stderr)
        if ignored:
            print(f"[setup] pip settings uv does not get: {', '.join(ignored)}", file=sys.stderr)
    env = {**environment, **os.environ}  # a variable already set wins
    return subprocess.run([find_uv_bin(), "pip", *argv], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
