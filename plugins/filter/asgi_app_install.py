"""How a release's virtualenv is built, decided on the controller: asgi_app_install_plan.

plugins/module_utils/asgi_app_install.py does the work (its docstring says what each kind of
source installs, and how the server packages are kept in step with the app's lock). Preflight
calls it through this filter, so that a lock that conflicts with the role's pins stops the deploy
before anything changes; build.yml runs the steps it returns.
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.asgi.gunicorn.plugins.module_utils.asgi_app_install import install_plan
from ansible_collections.asgi.gunicorn.plugins.module_utils.asgi_app_source import (
    DEFAULT_EXCLUDE,
    exclusion,
)


def asgi_app_install_plan(source, installer, packages, python, uv, release_dir, code_dir, package="",
                          is_directory=False, exclude=None):
    """The installer's steps for the release and what the source asks to install; see the module."""
    try:
        return install_plan(str(source), bool(is_directory), installer, uv, python, release_dir, code_dir,
                            package, list(packages), exclusion(DEFAULT_EXCLUDE if exclude is None else exclude))
    except (OSError, ValueError) as exc:  # an unreadable file, a uv.lock that is not TOML
        raise AnsibleFilterError(f"asgi_app: cannot read what the application's source {source} "
                                 f"installs: {exc}") from exc


class FilterModule:
    """asgi_app's install plan: the installer's steps, the app's lock, and its conflicts."""

    def filters(self):
        return {"asgi_app_install_plan": asgi_app_install_plan}
