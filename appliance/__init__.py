"""The trading appliance (see README.md and docs/). Importing the package points numba's cache
at a directory keyed by the package's sources and sets how kernels are compiled
(:mod:`appliance.jit`), before any kernel exists."""
from appliance import jit as _jit

_jit.setup_cache()
_jit.install_kernel_policy()
