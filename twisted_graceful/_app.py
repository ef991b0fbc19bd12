# -*- test-case-name: tests.test_app -*-
"""
Load the application named on the command line by a dotted path.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any, Callable

from twisted.web.resource import IResource

from ._errors import AppLoadError


def loadObject(dotted: str, option: str) -> Any:
    """
    Import C{package.module.attribute} and return the attribute.

    @param option: The option that named it, for error messages.
    @raise AppLoadError: The name is malformed, the module cannot be
        imported, or it has no such attribute.
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
            raise AppLoadError(_importFailure(option, moduleName, e)) from None
        except Exception as e:
            raise AppLoadError(_importFailure(option, moduleName, e)) from None
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


def _importFailure(option: str, moduleName: str, e: BaseException) -> str:
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    if isinstance(e, SyntaxError) and e.filename:
        where = f" ({e.filename}, line {e.lineno})"
    elif frames:
        last = frames[-1]
        where = f" ({last.filename}, line {last.lineno})"
    return (
        f"{option}: importing {moduleName!r} failed with {type(e).__name__}: {e}{where}. "
        "Fix the module, then start again."
    )


def loadResource(dotted: str, option: str = "--app") -> IResource:
    """
    Load an L{IResource} provider, or call a zero-argument callable that
    returns one.

    @raise AppLoadError: As L{loadObject}, or the object is not a resource.
    """
    obj = loadObject(dotted, option)
    if IResource.providedBy(obj):
        return obj
    if callable(obj):
        try:
            made = obj()
        except TypeError as e:
            raise AppLoadError(
                f"{option} {dotted!r}: calling {obj!r} with no arguments failed ({e}). "
                "Name an IResource provider, or a callable that takes no arguments and returns one."
            ) from None
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
