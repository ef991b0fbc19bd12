"""
The C{twistd graceful} subcommand.  Kept import-light: C{twisted_graceful.tap}
is named by string and imported only when the subcommand is used.
"""

from twisted.application.service import ServiceMaker

twistedGraceful = ServiceMaker(
    "Twisted Graceful",
    "twisted_graceful.tap",
    "Serve a twisted.web resource or WSGI app with graceful shutdown and "
    "zero-downtime restart (SIGUSR2).",
    "graceful",
)
