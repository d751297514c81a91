#!/bin/sh
# Runs one hostile case of cases.txt: run_case.sh CASES_FILE NAME. Passes when the exit status
# is one of EXPECTED's digits, stderr holds exactly one line, OUTPUT does not exist ("-": not
# checked) and no temporary output file is left in $O.
line=$(grep "^$2|" "$1") || { echo "no case $2"; exit 1; }
expected=$(printf '%s' "$line" | cut -d'|' -f2)
out=$(printf '%s' "$line" | cut -d'|' -f3)
cmd=$(printf '%s' "$line" | cut -d'|' -f4-)
rm -rf "$O" && mkdir -p "$O" || exit 1
out=$(eval "printf '%s' \"$out\"")
sh -c "$cmd" > "$O/.stdout" 2> "$O/.stderr"
rc=$?
fail() { echo "FAIL: $1"; echo "command: $cmd"; echo "exit status: $rc"; echo "stderr:"; cat "$O/.stderr"; exit 1; }
[ "$rc" -lt 10 ] || fail "exit status $rc (a signal?)"
case $expected in *$rc*) ;; *) fail "exit status $rc, expected one of $expected";; esac
lines=$(wc -l < "$O/.stderr")
[ "$lines" -eq 1 ] || fail "$lines lines on stderr, expected one"
if [ "$out" != "-" ] && [ -e "$out" ]; then fail "output $out was left behind"; fi
partial=$(find "$O" -name '.voxinfer-partial-*' | head -1)
[ -z "$partial" ] || fail "temporary file $partial was left behind"
echo "ok: exit $rc: $(cat "$O/.stderr")"
