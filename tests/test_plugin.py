"""
The twistd dropin is found by Twisted's plugin system and is inert.
"""

from __future__ import annotations

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """
        C{twistd graceful} is listed among the service makers, and names its
        module by string.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("graceful", makers)
        maker = makers["graceful"]
        verifyObject(IServiceMaker, maker)
        verifyObject(IPlugin, maker)
        self.assertEqual(maker.module, "twisted_graceful.tap")
        from twisted_graceful.tap import Options

        self.assertIsInstance(maker.options(), Options)
