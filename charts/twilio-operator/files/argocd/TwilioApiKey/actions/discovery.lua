-- The actions Argo CD offers on a TwilioApiKey: rotate, unless the key is being deleted.
local actions = {}
actions["rotate"] = {["disabled"] = obj.metadata.deletionTimestamp ~= nil}
return actions
