# -*- test-case-name: tests.test_app -*-
"""
Load the application named on the command line by a dotted path.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from typing import Any, Callable

from twisted.web.resource import IResource

from ._errors import AppLoadError
from ._extras import missingExtra


def loadObject(dotted: str, option: str) -> Any:
    """
    Import C{package.module.attribute} and return the attribute.

    @param option: The option that named it, for error messages.
    @raise AppLoadError: The name is malformed, the module cannot be
        imported (the import's exception is the C{__cause__}), or it has no
        such attribute.
    """
    parts = dotted.strip().split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise AppLoadError(
            f"{option} {dotted!r}: expected a dotted path to an object, such as "
            "'myproject.web.root' (module myproject.web, attribute root)."
        )
    for split in range(len(parts) - 1, 0, -1):
        moduleName = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(moduleName)
        except ModuleNotFoundError as e:
            if e.name is not None and (moduleName == e.name or moduleName.startswith(e.name + ".")):
                continue  # Not this prefix: try a shorter one.
            raise AppLoadError(_importFailure(option, moduleName, e)) from e
        except Exception as e:
            raise AppLoadError(_importFailure(option, moduleName, e)) from e
        for attribute in parts[split:]:
            try:
                obj = getattr(obj, attribute)
            except AttributeError:
                raise AppLoadError(
                    f"{option} {dotted!r}: module {moduleName!r} has no attribute "
                    f"{'.'.join(parts[split:])!r}. Check the name, or that the module defines it."
                ) from None
        return obj
    raise AppLoadError(
        f"{option} {dotted!r}: no module named {parts[0]!r}. Check the spelling, and that "
        "it is installed or in the current directory (PYTHONPATH)."
    )


def _where(e: BaseException) -> str:
    """
    C{" (file, line N)"}: where C{e} was raised.
    """
    frames = traceback.extract_tb(e.__traceback__)
    if isinstance(e, SyntaxError) and e.filename:
        return f" ({e.filename}, line {e.lineno})"
    if frames:
        last = frames[-1]
        return f" ({last.filename}, line {last.lineno})"
    return ""


def _importFailure(option: str, moduleName: str, e: BaseException) -> str:
    missing = missingExtra(f"{option}: {moduleName!r}", e)
    if missing is not None:
        return str(missing)
    return (
        f"{option}: importing {moduleName!r} failed with {type(e).__name__}: {e}{_where(e)}. "
        "Fix the module, then start again."
    )


def _call(obj: Callable[[], Any], dotted: str, option: str) -> Any:
    """
    Call the zero-argument callable C{obj} that C{option} named.

    @raise AppLoadError: C{obj} needs arguments, or raised; the exception it
        raised is the L{AppLoadError}'s C{__cause__}.
    """
    try:
        inspect.signature(obj).bind()
    except TypeError as e:
        raise AppLoadError(
            f"{option} {dotted!r}: {obj!r} cannot be called with no arguments ({e}). "
            "Name an IResource provider, or a callable that takes no arguments and returns one."
        ) from None
    except ValueError:
        pass  # No signature to check (a builtin): call it and see.
    try:
        return obj()
    except Exception as e:
        missing = missingExtra(f"{option} {dotted!r}", e)
        if missing is not None:
            raise AppLoadError(str(missing)) from e
        raise AppLoadError(
            f"{option} {dotted!r}: calling it raised {type(e).__name__}: {e}{_where(e)}. "
            "Fix the application, then start again."
        ) from e


def loadResource(dotted: str, option: str = "--app") -> IResource:
    """
    Load an L{IResource} provider, or call a zero-argument callable that
    returns one.

    @raise AppLoadError: As L{loadObject}; the callable needs arguments, or
        raised (its exception is the C{__cause__}); or the object is not a
        resource.
    """
    obj = loadObject(dotted, option)
    if IResource.providedBy(obj):
        return obj
    if callable(obj):
        made = _call(obj, dotted, option)
        if IResource.providedBy(made):
            return made
        raise AppLoadError(
            f"{option} {dotted!r}: {obj!r}() returned {made!r}, which is not a twisted.web "
            "IResource. For a WSGI application use --wsgi instead."
        )
    raise AppLoadError(
        f"{option} {dotted!r}: {obj!r} is not a twisted.web IResource nor a callable returning "
        "one. For a WSGI application use --wsgi instead."
    )


def loadWSGI(dotted: str, option: str = "--wsgi") -> Callable[..., Any]:
    """
    Load a WSGI application: a callable taking C{(environ, start_response)}.

    @raise AppLoadError: As L{loadObject}, or the object is not callable.
    """
    obj = loadObject(dotted, option)
    if IResource.providedBy(obj):
        raise AppLoadError(f"{option} {dotted!r}: {obj!r} is a twisted.web resource; use --app instead.")
    if not callable(obj):
        raise AppLoadError(
            f"{option} {dotted!r}: {obj!r} is not callable, so it is not a WSGI application "
            "(a callable taking environ and start_response)."
        )
    return obj  # type: ignore[no-any-return]
