"""The role's source check (roles/asgi_app/files/check_app_source.py), run in Ansible's process.

The script stays what it is, a standalone check on the standard library only
(``python check_app_source.py path/to/app``); this filter loads that same file and calls it, so
that preflight reads the app's source on the controller without starting a command for it.
"""

import importlib.util

from ansible.errors import AnsibleFilterError

_CHECKERS = {}


def _checker(script):
    if script not in _CHECKERS:
        spec = importlib.util.spec_from_file_location("asgi_app_check_app_source", script)
        if spec is None or spec.loader is None:
            raise AnsibleFilterError(f"asgi_app: cannot load the source check {script}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _CHECKERS[script] = module
    return _CHECKERS[script]


def source_check(source, script):
    """What ``check_app_source.py --json SOURCE`` prints: findings, unparsable files, digest.

    ``source`` is a directory, a wheel or zip, or an sdist on the controller; ``script`` the
    path of check_app_source.py (the role's files/).
    """
    try:
        return _checker(str(script)).inspect_source(str(source))
    except AnsibleFilterError:
        raise
    except Exception as exc:  # an unreadable file or archive: say which source, and why
        raise AnsibleFilterError(f"asgi_app: the source check of {source} failed: {exc!r}") from exc


class FilterModule:
    """asgi_app source check."""

    def filters(self):
        return {"asgi_app_source_check": source_check}
