# -*- test-case-name: tests.test_exports -*-
"""
The version of twisted-graceful: the one place it is written (the wheel's
metadata reads it from here).
"""

__version__ = "0.1.0"
