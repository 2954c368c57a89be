"""The app's source, read on the controller in Ansible's process: asgi_app_source.

plugins/module_utils/asgi_app_source.py does the work (its docstring explains the one listing
that the digest, the check and the archive share, and the exclude patterns). Preflight calls it
through this filter, without starting a command; the role later runs the same file as a script,
whose path the filter returns, to write the archive it transfers to the host.
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.asgi.gunicorn.plugins.module_utils.asgi_app_source import (
    DEFAULT_EXCLUDE,
    SCRIPT,
    inspect_source,
)


def asgi_app_source(source, exclude=None):
    """What ``asgi_app_source.py check --json SOURCE`` prints, and the script's path.

    ``source`` is a directory, a wheel or zip, or an sdist on the controller; ``exclude`` the
    patterns of what a directory does not deploy (asgi_app_src_exclude), DEFAULT_EXCLUDE when
    omitted. Returns {"digest", "files", "bytes", "findings", "unparsable", "script"}, "script"
    being the absolute path of the module to run as ``python SCRIPT archive SOURCE DEST ...``.
    """
    try:
        result = inspect_source(str(source), DEFAULT_EXCLUDE if exclude is None else exclude)
    except Exception as exc:  # a link that leads nowhere, an unreadable file or archive: say which, and why
        raise AnsibleFilterError(f"asgi_app: cannot read the application's source {source}: {exc}") from exc
    return {**result, "script": SCRIPT}


class FilterModule:
    """asgi_app's source: digest, size, check findings, and the script that archives it."""

    def filters(self):
        return {"asgi_app_source": asgi_app_source}
