"""
C{python -m twisted_graceful}: the control command (see L{twisted_graceful._control}).
"""

from ._control import run

run()
