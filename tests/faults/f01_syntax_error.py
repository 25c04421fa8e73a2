# Fault: a syntax error at import.
# Server: the plugin ends FAILED with the SyntaxError in its error (L1); the
# server and the other plugins go on.
UCS_PLUGIN = "Broken"

class Broken:
    def __init__(self, ucs)
        self.ucs = ucs
