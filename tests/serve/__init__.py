"""The serve tests: a package, so that its conftest.py does not take the module name `conftest`
from tests/conftest.py (which the test modules import their shared helpers from)."""
