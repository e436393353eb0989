-- Argo CD health of a twilio.operator.dev object (TwilioAccount, TwilioSubaccount, TwilioApiKey),
-- read from what the operator writes: kstatus' Stalled and Reconciling conditions, then Ready.
-- The reason leads the message, so the application view says why without opening the object.
local waiting = {status = "Progressing", message = "Waiting for the operator to reconcile this object"}
if obj.metadata.deletionTimestamp ~= nil then
  waiting.message = "Scheduled for deletion: the operator undoes at Twilio what spec.deletionPolicy says"
  return waiting
end
if obj.status == nil then
  return waiting
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  waiting.message = "Waiting for the operator to act on generation " .. generation
  return waiting
end
local found = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    found[condition.type] = condition
  end
end
local function told(condition)
  return (condition.reason or "") .. ": " .. (condition.message or "")
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  return {status = "Degraded", message = told(found.Stalled)}
end
if found.Reconciling ~= nil and found.Reconciling.status == "True" then
  return {status = "Progressing", message = told(found.Reconciling)}
end
local ready = found.Ready
if ready == nil then
  return waiting
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or ""}
end
-- Ready False without a kstatus condition was written by an operator older than them.
return {status = "Degraded", message = told(ready)}
