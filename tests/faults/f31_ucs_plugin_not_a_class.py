# Fault: UCS_PLUGIN names a function, not a class.
# Server: FAILED, "which is a function, not a class" (P3, L1).
UCS_PLUGIN = "plugin"


def plugin(ucs):
    return None
