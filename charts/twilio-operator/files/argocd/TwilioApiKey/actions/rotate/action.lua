-- Rotates the key now: any new value of the rotate annotation asks the operator for one rotation.
-- The current time is that new value, and says in the object when the rotation was asked for.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["twilio.operator.dev/rotate"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
