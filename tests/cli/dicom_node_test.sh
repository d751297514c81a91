#!/usr/bin/env bash
# `voxinfer serve` end to end against a real Orthanc (Debian's package), both on loopback ports
# with generated configurations:
#   1. Orthanc sends a CT series (REST /modalities/voxinfer/store); the SEG comes back, references
#      the series, and decodes to the same labels as `voxinfer segment --dicom-seg` on it.
#   2. Orthanc is down when the SEG is ready (a send has failed) and back after 20 s: the SEG arrives once.
#   3. voxinfer is killed during inference and restarted: the SEG arrives once.
#   4. A calling AE title not in the allow list is rejected at association.
#   5. Three series sent at once all come back.
#   6. A malformed instance is refused and the node keeps serving.
#   7. A series no route takes (MR for a CT route) is kept in unrouted/ and logged, not processed.
# No patient name may appear in the node's logs. Needs VOX, MK (make_ct_series), NN (an nnU-Net
# folder for CT) and IN (a CT volume); exits 77 (skipped) without Orthanc or DCMTK's tools.
set -u
for tool in Orthanc echoscu storescu curl python3; do
  command -v "$tool" > /dev/null || { echo "SKIP: $tool is not installed (scripts/setup.sh installs it)"; exit 77; }
done

W="$PWD/dicom_node"
rm -rf "$W" && mkdir -p "$W"
base=$((20000 + ($$ % 2000) * 3))
HTTP=$base ODICOM=$((base + 1)) NODE=$((base + 2))
API="http://127.0.0.1:$HTTP"
OPID="" NPID=""
cleanup() {
  [[ -n "$NPID" ]] && kill -9 "$NPID" 2> /dev/null
  [[ -n "$OPID" ]] && kill "$OPID" 2> /dev/null
  wait 2> /dev/null
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  echo "--- node log"; tail -n 40 "$W"/node*.log 2> /dev/null
  echo "--- orthanc log"; tail -n 20 "$W/orthanc.log" 2> /dev/null
  exit 1
}

cat > "$W/orthanc.json" << EOF
{
  "Name": "voxinfer-test", "StorageDirectory": "$W/orthanc-db", "IndexDirectory": "$W/orthanc-db",
  "HttpPort": $HTTP, "DicomPort": $ODICOM, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true,
  "DicomAlwaysAllowEcho": true, "Plugins": [], "SaveJobs": false, "ConcurrentJobs": 4,
  "DicomModalities": { "voxinfer": [ "VOXINFER", "127.0.0.1", $NODE ] }
}
EOF
start_orthanc() {
  Orthanc "$W/orthanc.json" >> "$W/orthanc.log" 2>&1 &
  OPID=$!
  for _ in $(seq 100); do curl -sf "$API/system" > /dev/null && return 0; sleep 0.2; done
  fail "Orthanc did not start"
}
stop_orthanc() { kill "$OPID"; wait "$OPID" 2> /dev/null; OPID=""; }

cat > "$W/node.json" << EOF
{ "aet": "VOXINFER", "port": $NODE, "spool": "spool", "destinations": ["ORTHANC@127.0.0.1:$ODICOM"],
  "stable_seconds": 2, "retry_first_seconds": 1, "retry_max_seconds": 4, "log_json": true, "rtstruct": true,
  "routes": [ { "name": "ct", "model": "$NN", "modality": "CT" } ] }
EOF
start_node() {  # $1: log file
  "$VOX" serve --config "$W/node.json" --threads 2 > "$1" 2>&1 &
  NPID=$!
  for _ in $(seq 100); do
    echoscu -aet ORTHANC -aec VOXINFER 127.0.0.1 "$NODE" 2> /dev/null && return 0
    kill -0 "$NPID" 2> /dev/null || fail "the node exited at start"
    sleep 0.2
  done
  fail "the node does not answer C-ECHO"
}

# Orthanc's view: the source series UID each stored SEG references, one line per SEG.
seg_refs() {
  python3 - "$API" << 'EOF'
import json, sys, urllib.request
api = sys.argv[1]
def get(path, body=None):
    req = urllib.request.Request(api + path, data=None if body is None else json.dumps(body).encode())
    return json.load(urllib.request.urlopen(req))
for i in get("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}}):
    tags = get(f"/instances/{i}/tags?simplify")
    print(tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"])
EOF
}
count_segs_for() { seg_refs | grep -c -x "$1"; }
wait_for_seg() {  # $1 series UID, $2 seconds
  for _ in $(seq $(($2 * 5))); do
    [[ $(count_segs_for "$1") -ge 1 ]] && return 0
    sleep 0.2
  done
  fail "no SEG for series $1 after $2 s"
}
upload() {  # folder -> Orthanc series ID on stdout
  for f in "$1"/*.dcm; do curl -sf -X POST "$API/instances" --data-binary @"$f" > /dev/null || fail "upload $f"; done
  curl -sf -X POST "$API/tools/lookup" -d "$2" | python3 -c "import json,sys; print([r['ID'] for r in json.load(sys.stdin) if r['Type']=='Series'][0])"
}
send() { curl -sf -X POST "$API/modalities/voxinfer/store" -d "$1" > /dev/null || fail "Orthanc could not send $1"; }

U=1.2.826.0.1.3680043.9.9999
for n in 1 2 3 4 5 6; do "$MK" "$IN" "$W/s$n" "$U.10$n" "series $n" || fail "make series $n"; done
"$MK" "$IN" "$W/bad" "" "malformed" || fail "make the malformed series"
"$MK" "$IN" "$W/mr" "$U.107" "an MR series" MR || fail "make the MR series"

start_orthanc
start_node "$W/node1.log"
S1=$(upload "$W/s1" "$U.101")

# 1. Round trip, against `voxinfer segment` on the same series.
"$VOX" segment --model "$NN" -i "$W/s1" -o "$W/ref.nii.gz" --dicom-seg "$W/ref_seg.dcm" --threads 2 2> "$W/ref.log" \
  || fail "voxinfer segment on the series"
send "$S1"
wait_for_seg "$U.101" 300
seg=$(curl -sf -X POST "$API/tools/find" -d '{"Level":"Instance","Query":{"Modality":"SEG"}}' | python3 -c "import json,sys; print(json.load(sys.stdin)[0])")
curl -sf "$API/instances/$seg/file" -o "$W/got_seg.dcm" || fail "download the SEG"
"$VOX" convert "$W/got_seg.dcm" "$W/got.nii" --dicom-reference "$W/s1" 2> /dev/null || fail "decode the received SEG"
"$VOX" convert "$W/ref_seg.dcm" "$W/ref.nii" --dicom-reference "$W/s1" 2> /dev/null || fail "decode the reference SEG"
cmp -s "$W/got.nii" "$W/ref.nii" || fail "the SEG's frames differ from voxinfer segment's"
"$VOX" info "$W/got_seg.dcm" | grep -q "referencing series $U.101" || fail "the SEG does not reference the series"
rt=$(curl -sf -X POST "$API/tools/find" -d '{"Level":"Instance","Query":{"Modality":"RTSTRUCT"}}' | python3 -c "import json,sys; print(json.load(sys.stdin)[0])") \
  || fail "no RTSTRUCT in Orthanc"
curl -sf "$API/instances/$rt/file" -o "$W/got_rtstruct.dcm" || fail "download the RTSTRUCT"
if command -v dciodvfy > /dev/null; then
  dciodvfy "$W/got_rtstruct.dcm" > "$W/dciodvfy.txt" 2>&1
  if grep -q "^Error" "$W/dciodvfy.txt"; then cat "$W/dciodvfy.txt"; fail "dciodvfy finds errors in the RTSTRUCT"; fi
fi
echo "round trip: SEG in Orthanc, same labels as voxinfer segment; RTSTRUCT beside it"

# 2. Destination down when the SEG is ready, back 20 s later.
S2=$(upload "$W/s2" "$U.102")
send "$S2"
stop_orthanc
down=$SECONDS
for _ in $(seq 1500); do grep -q '"event":"send_failed"' "$W/node1.log" && break; sleep 0.2; done
grep -q '"event":"send_failed"' "$W/node1.log" || fail "no failed send was logged while Orthanc was down"
while ((SECONDS - down < 20)); do sleep 0.5; done
start_orthanc
wait_for_seg "$U.102" 120
sleep 6  # a duplicate would come within the retry period
[[ $(count_segs_for "$U.102") -eq 1 ]] || fail "the SEG of series 2 arrived $(count_segs_for "$U.102") times"
echo "destination down $((SECONDS - down)) s: SEG arrived once"

# 3. The node killed during inference, then restarted.
S3=$(upload "$W/s3" "$U.103")
lines=$(wc -l < "$W/node1.log")
send "$S3"
for _ in $(seq 2400); do
  tail -n +"$((lines + 1))" "$W/node1.log" | grep -q '"event":"job_started"' && break
  sleep 0.05
done
kill -9 "$NPID"; wait "$NPID" 2> /dev/null; NPID=""
start_node "$W/node2.log"
wait_for_seg "$U.103" 300
grep -q '"event":"job_requeued"' "$W/node2.log" || fail "the restarted node did not requeue the interrupted job"
sleep 3
[[ $(count_segs_for "$U.103") -eq 1 ]] || fail "the SEG of series 3 arrived $(count_segs_for "$U.103") times"
echo "node killed during inference and restarted: SEG arrived once"

# 4. A calling AE title that is not allowed.
if echoscu -aet INTRUDER -aec VOXINFER 127.0.0.1 "$NODE" 2> /dev/null; then fail "INTRUDER was accepted"; fi
grep -q "INTRUDER' is not allowed" "$W/node2.log" || fail "the refused association was not logged"
echo "calling AE not in the allow list: rejected"

# 5. Three series at once.
ids=()
for n in 4 5 6; do ids+=("$(upload "$W/s$n" "$U.10$n")"); done
for id in "${ids[@]}"; do
  curl -sf -X POST "$API/modalities/voxinfer/store" -d "{\"Resources\": [\"$id\"], \"Asynchronous\": true}" > /dev/null \
    || fail "asynchronous store"
done
for n in 4 5 6; do wait_for_seg "$U.10$n" 600; done
echo "three series at once: three SEGs"

# 6. A malformed instance (no valid Series Instance UID) is refused; the node keeps serving.
if storescu -aet ORTHANC -aec VOXINFER 127.0.0.1 "$NODE" "$W/bad/slice_0001.dcm" 2> /dev/null; then
  fail "the malformed instance was accepted"
fi
kill -0 "$NPID" 2> /dev/null || fail "the node died on a malformed instance"
echoscu -aet ORTHANC -aec VOXINFER 127.0.0.1 "$NODE" || fail "the node stopped answering after a malformed instance"
grep -q '"event":"instance_refused"' "$W/node2.log" || fail "the refused instance was not logged"
echo "malformed instance: refused, node still serving"

# 7. No route for an MR series.
MR=$(upload "$W/mr" "$U.107")
send "$MR"
for _ in $(seq 100); do grep -q '"event":"series_unrouted"' "$W/node2.log" && break; sleep 0.2; done
grep -q '"event":"series_unrouted"' "$W/node2.log" || fail "the MR series was not logged as unrouted"
ls "$W"/spool/unrouted/*/input/*.dcm > /dev/null 2>&1 || fail "the unrouted series was not kept"
[[ $(count_segs_for "$U.107") -eq 0 ]] || fail "the unrouted series was segmented"
echo "series without a route: kept and logged, not processed"

# Nothing of the patient's identity in the logs; every SEG once; the status command.
if grep -q -e "Doe" -e "PID-0001" "$W"/node*.log; then fail "the patient's name or ID is in the node's log"; fi
for n in 1 2 3 4 5 6; do
  [[ $(count_segs_for "$U.10$n") -eq 1 ]] || fail "series $n has $(count_segs_for "$U.10$n") SEGs"
done
kill -TERM "$NPID"; wait "$NPID"; rc=$?; NPID=""
[[ $rc -eq 0 ]] || fail "SIGTERM: exit status $rc"
"$VOX" serve --status --spool "$W/spool" > "$W/status.txt" || fail "serve --status"
cat "$W/status.txt"
python3 - "$W/spool" << 'EOF'
import glob, json, sys
t = sorted(json.load(open(f))["seconds_to_sent"] for f in glob.glob(sys.argv[1] + "/done/*/job.json"))
print(f"last instance (after the stable wait) to SEG stored in Orthanc: median {t[len(t) // 2]:.2f} s, "
      f"min {t[0]:.2f} s, max {t[-1]:.2f} s over {len(t)} series (including the retried and restarted ones)")
EOF
echo "dicom node: all checks passed"
