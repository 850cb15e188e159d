from __future__ import annotations

import numpy as np
import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    import rtvoice

    native = rtvoice._core.__version__
    return [f"rtvoice {rtvoice.__version__} (native core {native}), numpy {np.__version__}"]
