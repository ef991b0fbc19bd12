"""
Tests for L{twisted_graceful._extras}.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import GracefulError, MissingExtra
from twisted_graceful._extras import FEATURES, MODULES, extraFor, installCommand, missingExtra

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[Requirement], extras: frozenset[str] = frozenset()) -> set[str]:
    """
    The distributions C{requirements} install, transitively, as the
    installed metadata says.
    """
    seen: set[str] = set()
    todo = [(r, set(extras)) for r in requirements]
    while todo:
        requirement, wanted = todo.pop()
        name = _normal(requirement.name)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in (wanted or {""})
        ):
            continue
        if name in seen and not requirement.extras:
            continue
        seen.add(name)
        try:
            below = [Requirement(text) for text in requires(name) or []]
        except PackageNotFoundError:
            continue
        todo.extend((r, set(requirement.extras)) for r in below)
    return seen


class ExtrasTests(SynchronousTestCase):
    """
    The extras of C{pyproject.toml} and the modules named in messages agree.
    """

    def setUp(self) -> None:
        self.extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]

    def test_eachFeatureIsAnExtra(self) -> None:
        self.assertLessEqual(set(FEATURES), set(self.extras))
        self.assertEqual(set(MODULES.values()), set(FEATURES))

    def test_modulesComeWithTheirExtra(self) -> None:
        """
        Each module named for an extra is installed by that extra (so the
        command in the message brings the missing module), and C{http2}
        brings everything C{tls} does.
        """
        byModule = packages_distributions()
        installs = {extra: _closure([Requirement(r) for r in self.extras[extra]]) for extra in FEATURES}
        for module, extra in MODULES.items():
            distributions = {_normal(d) for d in byModule.get(module, [])}
            self.assertTrue(distributions & installs[extra], f"{extra} does not install {module}")
        self.assertLessEqual(installs["tls"], installs["http2"])
        self.assertIn("pyopenssl", installs["tls"])
        self.assertIn("service-identity", installs["tls"])

    def test_testExtraHasEveryFeature(self) -> None:
        """
        The test suite runs with every optional feature.
        """
        tests = _closure([Requirement(r) for r in self.extras["test"]])
        for extra in FEATURES:
            self.assertLessEqual(_closure([Requirement(r) for r in self.extras[extra]]), tests, extra)

    def test_missingExtra(self) -> None:
        """
        The absence of a module an extra brings gives a L{MissingExtra}
        whose one-line message names the feature and the install command.
        """
        error = missingExtra("--port 'ssl:8443'", ModuleNotFoundError("No module named 'OpenSSL'", name="OpenSSL"))
        assert error is not None
        self.assertIsInstance(error, GracefulError)
        self.assertEqual(error.extra, "tls")
        self.assertEqual(
            str(error),
            "--port 'ssl:8443' needs TLS (ssl: ports), which is not installed (no module named "
            "'OpenSSL'): pip install 'twisted-graceful[tls]'",
        )

    def test_submodule(self) -> None:
        self.assertEqual(extraFor(ModuleNotFoundError("x", name="wsproto.connection")), "websocket")

    def test_otherErrors(self) -> None:
        """
        Other missing modules, and other errors, are not about extras.
        """
        self.assertIsNone(missingExtra("x", ModuleNotFoundError("No module named 'flask'", name="flask")))
        self.assertIsNone(missingExtra("x", ImportError("cannot import name 'x'")))
        self.assertIsNone(missingExtra("x", ValueError("OpenSSL")))

    def test_installCommand(self) -> None:
        self.assertEqual(installCommand("http2"), "pip install 'twisted-graceful[http2]'")


class MissingExtraTests(SynchronousTestCase):
    def test_isImportError(self) -> None:
        """
        L{MissingExtra} is an L{ImportError} (code that catches a missing
        package keeps working) with the extra's name.
        """
        error = MissingExtra("needs tls", extra="tls")
        self.assertIsInstance(error, ImportError)
        self.assertEqual((str(error), error.extra), ("needs tls", "tls"))
