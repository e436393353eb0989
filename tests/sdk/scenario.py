"""Twilio's official Python SDK, pointed at the emulator, runs a full scenario and checks that
what it reads back is consistent with what it wrote. Run by tests/twilio_client.rs."""

import json
import os
import sys

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

URL = os.environ["EMULATOR_URL"]


def client(sid, token):
    c = Client(sid, token)
    c.api.base_url = URL
    c.iam.base_url = URL
    c.accounts.base_url = URL
    c.voice.base_url = URL
    return c


def expect_error(code, call):
    try:
        call()
    except TwilioRestException as e:
        assert e.code == code, f"expected Twilio error {code}, got {e.code}: {e.msg}"
        return
    raise AssertionError(f"expected Twilio error {code}, the call succeeded")


main = client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])

# A subaccount, seen the same way by create, fetch and list.
sub = main.api.v2010.accounts.create(friendly_name="sdk-tenant")
assert sub.status == "active" and sub.owner_account_sid == main.username
assert main.api.v2010.accounts(sub.sid).fetch().friendly_name == "sdk-tenant"
assert [a.sid for a in main.api.v2010.accounts.list(friendly_name="sdk-tenant")] == [sub.sid]

# v2010 keys in the subaccount, listed across pages.
created = [main.api.v2010.accounts(sub.sid).new_keys.create(friendly_name=f"k{i}") for i in range(5)]
assert all(k.secret for k in created), "create returns the secret"
listed = list(main.api.v2010.accounts(sub.sid).keys.stream(page_size=2))
assert [k.sid for k in listed] == [k.sid for k in created], "paging returns every key once, in order"
key = main.api.v2010.accounts(sub.sid).keys(created[0].sid)
assert key.fetch().friendly_name == "k0"
assert key.update(friendly_name="renamed").friendly_name == "renamed"
assert key.delete() is True
expect_error(20404, key.fetch)

# A restricted key through IAM v1, with the subaccount's own credentials.
tenant = client(sub.sid, sub.auth_token)
allow = ["/twilio/messaging/messages/create"]
restricted = tenant.iam.v1.new_api_key.create(account_sid=sub.sid, friendly_name="restricted", key_type="restricted", policy={"allow": allow})
assert restricted.secret and restricted.policy == {"allow": allow}
iam_keys = tenant.iam.v1.get_api_keys.list(account_sid=sub.sid, page_size=2)
assert restricted.sid in [k.sid for k in iam_keys] and len(iam_keys) == 5
fetched = tenant.iam.v1.api_key(restricted.sid).fetch()
assert fetched.policy == {"allow": allow}
wider = allow + ["/twilio/billing/balance/read"]
assert tenant.iam.v1.api_key(restricted.sid).update(policy={"allow": wider}).policy == {"allow": wider}
assert tenant.iam.v1.api_key(restricted.sid).delete() is True
expect_error(20404, tenant.iam.v1.api_key(restricted.sid).fetch)

# Suspend and reactivate.
assert main.api.v2010.accounts(sub.sid).update(status="suspended").status == "suspended"
expect_error(20003, lambda: tenant.api.v2010.accounts(sub.sid).fetch())
assert main.api.v2010.accounts(sub.sid).update(status="active").status == "active"

# Secondary auth token: create, use, promote; the old token dies.
secondary = tenant.accounts.v1.secondary_auth_token().create()
assert secondary.account_sid == sub.sid and secondary.secondary_auth_token
client(sub.sid, secondary.secondary_auth_token).api.v2010.accounts(sub.sid).fetch()
promoted = tenant.accounts.v1.auth_token_promotion().update()
assert promoted.auth_token == secondary.secondary_auth_token
expect_error(20003, lambda: tenant.api.v2010.accounts(sub.sid).fetch())
renewed = client(sub.sid, promoted.auth_token)
assert renewed.api.v2010.accounts(sub.sid).fetch().auth_token == promoted.auth_token

# Close, which cannot be undone.
assert main.api.v2010.accounts(sub.sid).update(status="closed").status == "closed"
expect_error(21479, lambda: main.api.v2010.accounts(sub.sid).update(status="active"))

# Voice dialing permissions act on the caller's own account: a subaccount inherits its parent's
# until it stops, then its own apply and a bulk update changes only those it names.
caller = main.api.v2010.accounts.create(friendly_name="sdk-voice")
tenant = client(caller.sid, caller.auth_token).voice.v1.dialing_permissions
assert tenant.settings().fetch().dialing_permissions_inheritance is True
assert tenant.countries("US").fetch().low_risk_numbers_enabled is True
tenant.settings().update(dialing_permissions_inheritance=False)
assert tenant.settings().fetch().dialing_permissions_inheritance is False
update = tenant.bulk_country_updates.create(
    update_request=json.dumps(
        [{"iso_code": "DE", "low_risk_numbers_enabled": "true", "high_risk_special_numbers_enabled": "false",
          "high_risk_tollfraud_numbers_enabled": "true"}]
    )
)
assert update.update_count == 1
enabled = [c.iso_code for c in tenant.countries.list(low_risk_numbers_enabled=True, page_size=2)]
assert enabled == ["CA", "DE", "US"], enabled
assert [c.iso_code for c in tenant.countries.list(high_risk_tollfraud_numbers_enabled=True)] == ["DE"]
assert main.voice.v1.dialing_permissions.countries("DE").fetch().low_risk_numbers_enabled is False, "the parent is untouched"
expect_error(20001, lambda: tenant.bulk_country_updates.create(update_request="[]"))

# The main account's balance; a subaccount carries none of its own (billing is pooled on the parent).
balance = main.api.balance.fetch()
assert balance.account_sid == main.username and balance.currency == "USD", balance
assert float(balance.balance) >= 0, balance.balance

print("scenario complete")
sys.exit(0)

