# Fault: the module imports something that does not exist.
# Server: FAILED with the ModuleNotFoundError traceback (L1).
import ucs_no_such_module  # noqa: F401

UCS_PLUGIN = "Never"
