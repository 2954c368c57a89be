"""Import an ASGI application the way a worker will, and check that it can serve.

Run by the asgi_app role on the target, with the new release's virtualenv, as the app's user,
in the service's sandbox and environment, before the new release may serve traffic:

    python check_asgi_app.py 'package.module:attribute'
    python check_asgi_app.py 'package.module:create_app()'

It loads the application with gunicorn's own loader (gunicorn.util.import_app, so a factory is
called as a worker would call it), checks that the result is an ASGI application (a callable
taking scope, receive and send whose call is awaitable), and runs the lifespan startup and
shutdown when the application supports them. On failure it prints the reason or the traceback
and exits with 1; the release is then not switched to.
"""

import asyncio
import inspect
import os
import sys
import traceback

LIFESPAN_TIMEOUT = 60


def load(target):
    """The application as gunicorn's workers get it (its loader parses the spec and calls factories)."""
    from gunicorn.util import import_app

    return import_app(target)


def asgi_problem(app):
    """Why app cannot be an ASGI application, or None (the lifespan call proves the rest)."""
    if inspect.isclass(app):
        return (f"{app!r} is a class; point asgi_app_module at an instance of it "
                "(an ASGI application is a callable taking scope, receive, send)")
    if not callable(app):
        return f"{app!r} is not callable"
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 2:
        return (f"{app!r} takes two arguments, like a WSGI application (environ, "
                "start_response); an ASGI application takes three (scope, receive, send)")
    if len(positional) != 3:
        return f"{app!r} takes {len(positional)} arguments; an ASGI application takes scope, receive, send"
    return None


async def lifespan(app):
    """Run startup and shutdown; returns (problem or None, whether the app supports lifespan).

    As Uvicorn does by default, an application that raises before it sends anything is taken
    as not supporting lifespan, which is fine.
    """
    queue = asyncio.Queue()
    sent = []
    await queue.put({"type": "lifespan.startup"})

    async def receive():
        return await queue.get()

    async def send(message):
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            await queue.put({"type": "lifespan.shutdown"})

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    result = app(scope, receive, send)
    if not inspect.isawaitable(result):
        return f"calling it returned {result!r}, not an awaitable: it is not an ASGI application", False
    try:
        await asyncio.wait_for(result, LIFESPAN_TIMEOUT)
    except asyncio.TimeoutError:
        return f"the lifespan startup and shutdown did not finish within {LIFESPAN_TIMEOUT} s", True
    except Exception:
        if not sent:
            return None, False
        failed = [m for m in sent if m["type"].endswith(".failed")]
        if not failed:
            raise
    failed = [m for m in sent if m["type"].endswith(".failed")]
    if failed:
        return f"{failed[0]['type']}:\n{failed[0].get('message', '')}", True
    return None, True


def main():
    target = sys.argv[1]
    # Like gunicorn after its chdir: the working directory comes first on the import path.
    sys.path.insert(0, os.getcwd())
    try:
        app = load(target)
    except Exception:
        print(f"Loading {target} failed:\n{traceback.format_exc()}")
        return 1
    problem = asgi_problem(app)
    if problem:
        print(f"{target} is not an ASGI application: {problem}")
        return 1
    try:
        problem, supported = asyncio.run(lifespan(app))
    except Exception:
        print(f"The lifespan startup of {target} raised:\n{traceback.format_exc()}")
        return 1
    if problem:
        print(f"The lifespan of {target} failed: {problem}")
        return 1
    print(f"{target} imports and is an ASGI application; "
          + ("its lifespan startup and shutdown ran." if supported else "it does not use lifespan."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
