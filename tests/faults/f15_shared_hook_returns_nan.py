# Fault: a shared-data hook that returns a float NaN, which cannot be stored.
# Server: S4: logged naming the plugin; the data requested is stored instead.
UCS_PLUGIN = "SharedHook"


class SharedHook:
    def __init__(self, ucs):
        ucs.shared.addChangeHook("f15", self.hook)

    def hook(self, identificator, old_data, new_data):
        return float("nan")
