"""
Tests for L{twisted_graceful._launcher.SuccessorLauncher}.
"""

from __future__ import annotations

import json
import os
import signal

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._errors import ChildExitedEarly
from twisted_graceful._inherit import ENV_GENERATION, ENV_PARENT_PID, ENV_SOCKETS
from twisted_graceful._launcher import SuccessorLauncher

from ._fakes import SpawningReactor

ARGV = ["/venv/bin/twistd", "-n", "graceful", "--port", "8080"]


class SuccessorLauncherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.failures: list[Failure] = []
        self.environ = {"PATH": "/bin", "LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
        self.launcher = SuccessorLauncher(
            self.reactor, argv=ARGV, directory="/srv/app", environ=self.environ, caught=(signal.SIGUSR2, None)
        )

    def test_sameCommandSignalsIgnoredUntilHandled(self) -> None:
        """
        The successor runs the same command from the launch directory,
        behind a shell that ignores the signals it will handle.
        """
        self.launcher.spawn({"tcp:8080": 7}, 3, lambda m: None, self.failures.append)
        (process,) = self.reactor.processes
        self.assertEqual(process.executable, "/bin/sh")
        self.assertEqual(process.args[:3], ["/bin/sh", "-c", f'trap "" {int(signal.SIGUSR2)}; exec "$0" "$@"'])
        self.assertEqual(process.args[3:], ARGV)
        self.assertEqual(process.path, "/srv/app")

    def test_environment(self) -> None:
        """
        The successor gets this process's environment without systemd's
        variables (which name this process), plus the hand-over: its
        sockets, this pid, the next generation.
        """
        self.launcher.spawn({"tcp:8080": 7}, 3, lambda m: None, self.failures.append)
        (process,) = self.reactor.processes
        self.assertNotIn("LISTEN_PID", process.env)
        self.assertNotIn("LISTEN_FDS", process.env)
        self.assertNotIn("LISTEN_FDNAMES", process.env)
        self.assertEqual(process.env["PATH"], "/bin")
        self.assertEqual(process.env[ENV_PARENT_PID], str(os.getpid()))
        self.assertEqual(process.env[ENV_GENERATION], "4")
        (target,) = json.loads(process.env[ENV_SOCKETS]).values()
        self.assertEqual(process.childFDs[target], 7)

    def test_cannotSpawn(self) -> None:
        """
        A command that cannot be started fails on the next reactor turn,
        naming the command.
        """
        self.reactor.failSpawn = OSError(2, "No such file or directory")
        self.launcher.spawn({}, 1, lambda m: None, self.failures.append)
        self.assertEqual(self.failures, [])
        self.reactor.advance(0)
        (failure,) = self.failures
        self.assertIsInstance(failure.value, ChildExitedEarly)
        self.assertIn("/venv/bin/twistd", failure.getErrorMessage())
