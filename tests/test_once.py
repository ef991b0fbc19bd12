"""
Tests for L{twisted_graceful._once}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._once import Once


class OnceTests(SynchronousTestCase):
    def test_beforeAndAfter(self) -> None:
        """
        Waiters from before and after the event get its result; it happens
        only once.
        """
        once: Once[int] = Once()
        before = once.when()
        self.assertNoResult(before)
        once.happen(1)
        once.happen(2)
        self.assertEqual((self.successResultOf(before), self.successResultOf(once.when())), (1, 1))
        self.assertTrue(once.happened)

    def test_cancelForgets(self) -> None:
        once: Once[None] = Once()
        cancelled, kept = once.when(), once.when()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        once.happen(None)
        self.assertIsNone(self.successResultOf(kept))
