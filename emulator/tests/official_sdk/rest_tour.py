"""The official SDK's RestClient/AdminClient against the emulator's REST endpoints (issue 14).

Not part of run.sh; run by hand against a running emulator:
    TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-x \
        target/official-sdk-venv/bin/python -W ignore emulator/tests/official_sdk/rest_tour.py
Prints what each call answered and "OK" at the end; any pydantic validation error of a
response model (a missing or mistyped field) fails it.
"""
import os, sys, urllib.request, datetime, json
import tinker
from tinker import types
sc = tinker.ServiceClient(user_metadata={"team": "rl"}, project_id="proj-sdk")
tc = sc.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=8)
datum = types.Datum(model_input=types.ModelInput.from_ints([1,2,3,4]), loss_fn_inputs={"target_tokens": [2,3,4,5]})
tc.forward_backward([datum], "cross_entropy").result()
tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
p = tc.save_state("s1").result().path
rc = sc.create_rest_client()
run_id = p.split("/")[2]
print("runs", len(rc.list_training_runs(access_scope="owned").result().training_runs))
print("run", rc.get_training_run(run_id, access_scope="accessible").result().model_owner)
rc.publish_checkpoint_from_tinker_path(p).result()
rc.unpublish_checkpoint_from_tinker_path(p).result()
rc.set_checkpoint_ttl_from_tinker_path(p, 86400).result()
rc.set_checkpoint_ttl_from_tinker_path(p, None).result()
ext = tc.save_weights_external("hf").result() if hasattr(tc, "save_weights_external") else None
print("ext", ext)
urls = rc.get_external_weights_urls(ext.path).result()
print("urls", sorted(urls.urls), urls.expires)
for u in urls.urls.values():
    assert urllib.request.urlopen(u).status == 200
sid = sc.holder.get_session_id() if hasattr(sc.holder, "get_session_id") else None
sessions = rc.list_sessions().result().sessions
print("sessions", len(sessions))
s = rc.get_session(sessions[0]).result()
print("session", s.training_run_ids, s.user_metadata)
res = rc.search_sessions(types.SessionSearchRequest(user_metadata={"team": "rl"}, limit=1)).result()
print("search", [x.session_id for x in res.sessions], res.sessions[0].status, res.next_cursor)
import tinker.lib.public_interfaces.rest_client as rcmod
rcmod._TRACE_EXPORT_POLL_INTERVAL_SECONDS = 0.1
url = rc.export_session_trace(sessions[0]).result()
print("trace", len(json.load(urllib.request.urlopen(url))["traceEvents"]))
cp = rc.copy_weights(p, destination_project_id="proj-sdk", ttl_seconds=7200).result()
print("copy", cp)
now = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
adm = tinker.AdminClient() if hasattr(tinker, "AdminClient") else rc._admin_client()
bu = adm.get_billing_usage(starting_on=now, ending_before=now + datetime.timedelta(hours=1)).result()
print("billing", [(e.event_info.type, getattr(e.event_info, "token_count", None)) for e in bu.data])
al = adm.get_audit_log(event_type="all").result()
print("audit", [e.event for e in al.entries][:8])
st = adm.get_current_checkpoint_storage_usage().result()
print("storage", [(d.project_id, d.checkpoint_count, d.size_bytes) for d in st.data])
rc.assign_session_project(sessions[0], "proj-sdk").result()
sc.close("success")
print("OK")
