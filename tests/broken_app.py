"""
A module that fails to import, for the --app error tests.
"""

root = 1 / 0
