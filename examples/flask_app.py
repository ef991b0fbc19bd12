"""
A Flask application served by twisted-graceful through WSGI:

    twistd -n graceful --port 8080 --wsgi examples.flask_app.app

(run from the repository root, or put this directory on PYTHONPATH).
"""

import os
import time

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return f"hello from Flask in pid {os.getpid()}\n"


@app.get("/slow")
def slow() -> str:
    # WSGI runs on the reactor's thread pool: blocking here is fine, and a
    # drain waits for it like for any request in flight.
    time.sleep(1)
    return f"slow answer from pid {os.getpid()}\n"
