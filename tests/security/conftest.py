from tests.platform.conftest import polled_shop, simulator  # noqa: F401 (fixtures)
