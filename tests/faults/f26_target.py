# The target of f26 (loaded by another plugin's constructor); itself healthy.
UCS_PLUGIN = "Target"


class Target:
    def __init__(self, ucs):
        ucs.log.info("f26_target constructed")
