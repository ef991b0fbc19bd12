"""
The public names of L{twisted_graceful}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import twisted_graceful


class ExportsTests(SynchronousTestCase):
    def test_all(self) -> None:
        """
        C{__all__} lists exactly the public names, and each exists.
        """
        import types

        public = {
            name
            for name, value in vars(twisted_graceful).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        self.assertEqual(sorted(public), sorted(twisted_graceful.__all__))

    def test_errorsShareBase(self) -> None:
        for name in twisted_graceful.__all__:
            obj = getattr(twisted_graceful, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                self.assertTrue(issubclass(obj, twisted_graceful.GracefulError), name)

    def test_documented(self) -> None:
        """
        Every public name has an entry in the API reference.
        """
        from pathlib import Path

        reference = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
        missing = [name for name in twisted_graceful.__all__ if f"`{name}" not in reference]
        self.assertEqual(missing, [])

    def test_version(self) -> None:
        """
        C{__version__} is a PEP 440 version, and the one the wheel's metadata
        is built from.
        """
        import tomllib
        from pathlib import Path

        from packaging.version import Version

        root = Path(__file__).parents[1]
        project = tomllib.loads((root / "pyproject.toml").read_text())
        self.assertIn("version", project["project"]["dynamic"])
        source = root / project["tool"]["hatch"]["version"]["path"]
        self.assertEqual(Path(twisted_graceful._version.__file__).resolve(), source.resolve())
        self.assertEqual(str(Version(twisted_graceful.__version__)), twisted_graceful.__version__)
