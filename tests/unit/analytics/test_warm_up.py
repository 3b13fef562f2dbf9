"""The service's warm-up compiles what a live snapshot runs, before the service says it is ready."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_warm_up_compiles_every_kernel_of_the_first_live_seconds() -> None:
    # A fresh process, so that no other test has compiled them already: after warm_up, the kernels of
    # a first snapshot and of the ones after it (IV solved from the last set's vols) are all there.
    code = textwrap.dedent(
        """
        from volguard_analytics.domain import _quote_kernels
        from volguard_analytics.domain.config import AnalyticsConfig
        from volguard_analytics.service import warm_up
        from volguard_common.quant import _iv_kernels, _sabr_kernels

        kernels = {
            "cold IV": _iv_kernels.implied_vol_and_status,
            "IV from a start": _iv_kernels.implied_vol_and_status_from,
            "IV starts": _quote_kernels.iv_starts,
            "SABR": _sabr_kernels.fit_many,
            "25-delta": _sabr_kernels.wing_and_atm_vols_many,
            "surface": _quote_kernels.surface_and_fit_points,
        }
        warm_up(AnalyticsConfig())
        print(sorted(name for name, kernel in kernels.items() if not kernel.signatures))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"
