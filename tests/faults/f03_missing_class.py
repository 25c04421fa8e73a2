# Fault: UCS_PLUGIN names a class the module does not define (a typo).
# Server: FAILED, "which the module does not define" (P3, L1).
UCS_PLUGIN = "Missing"


class Misssing:
    def __init__(self, ucs):
        self.ucs = ucs
