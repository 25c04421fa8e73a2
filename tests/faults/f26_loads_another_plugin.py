# Fault: a plugin whose constructor loads another plugin.
# Server: allowed: the other plugin loads (its own per-name turn); both end
# RUNNING; the later discovery of the other file reloads it.
UCS_PLUGIN = "LoadsAnother"


class LoadsAnother:
    def __init__(self, ucs):
        info = ucs.api.plugins.load(ucs.sid, "f26_target")
        ucs.log.info("f26 loaded f26_target: %s", info["state"])
