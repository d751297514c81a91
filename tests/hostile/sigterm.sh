#!/bin/sh
# Sends SIGTERM (then SIGINT) to `voxinfer convert` once its temporary output file exists and
# checks that the process ends, the temporary is gone and no output file appeared.
for sig in TERM INT; do
  rm -rf "$O" && mkdir -p "$O" || exit 1
  # A background job of a script starts with SIGINT ignored; give it the default action.
  env --default-signal=INT $VOX convert "$H/big.nii" "$O/out.nii.gz" 2> "$O/err.txt" &
  pid=$!
  seen=""
  i=0
  while [ $i -lt 3000 ]; do
    if [ -n "$(find "$O" -name '.voxinfer-partial-*' | head -1)" ]; then seen=1; break; fi
    kill -0 $pid 2> /dev/null || break
    sleep 0.01
    i=$((i + 1))
  done
  [ -n "$seen" ] || { echo "no temporary file seen before voxinfer ended"; wait $pid; exit 1; }
  kill -s $sig $pid
  wait $pid
  rc=$?
  [ $rc -ne 0 ] || { echo "SIG$sig: voxinfer finished before the signal; use a larger volume"; exit 1; }
  left=$(find "$O" -name '.voxinfer-partial-*')
  [ -z "$left" ] || { echo "SIG$sig left $left"; exit 1; }
  [ ! -e "$O/out.nii.gz" ] || { echo "SIG$sig left out.nii.gz"; exit 1; }
  echo "SIG$sig: exit $rc, no temporary, no output"
done
