# Fault: UCS_PLUGIN is not a str (it is the class itself).
# Server: FAILED, "UCS_PLUGIN must be a str naming a class" (P3, L1).
class NotAName:
    def __init__(self, ucs):
        self.ucs = ucs


UCS_PLUGIN = NotAName
