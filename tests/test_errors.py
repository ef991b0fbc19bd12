"""
Tests for L{twisted_graceful._errors}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import _errors


class ErrorsTests(SynchronousTestCase):
    def test_documentedAndRooted(self) -> None:
        """
        Every exception derives from L{GracefulError} and says when it is
        raised.
        """
        for name in dir(_errors):
            obj = getattr(_errors, name)
            if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == _errors.__name__:
                self.assertTrue(issubclass(obj, _errors.GracefulError), name)
                self.assertTrue(obj.__doc__ and obj.__doc__.strip(), name)
