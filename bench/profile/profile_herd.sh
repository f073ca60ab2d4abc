#!/bin/sh
# Profiles a herd under ../shared/bench/compare.py's load: Alford (takes the IAMATs) and
# Hamilton (relays only) run with --cpu-prof. compare.py kills each node's process group
# with SIGKILL, which writes no profile, so each node runs in a session of its own
# (setsid) and is stopped here with SIGTERM once compare.py is done; its profile is then
# written on the clean exit. Run from the project's root:
#
#   sh bench/profile/profile_herd.sh /tmp/herd-prof
#   deno run -R bench/profile/cpuprofile.ts /tmp/herd-prof/Alford/*.cpuprofile
#
# It also prints each node's CPU time by thread (main JS thread, KV's writer sw-0, ...).
set -e
out=${1:-/tmp/herd-prof}
rm -rf "$out" && mkdir -p "$out"
wrap="$out/node.sh"
cat > "$wrap" <<WRAP
#!/bin/sh
name=\$1; shift
case "\$name" in
  Alford|Hamilton) prof="--cpu-prof --cpu-prof-dir=$out/\$name" ;;
  *) prof="" ;;
esac
setsid deno run -A --unstable-kv \$prof main.ts --name \$name "\$@" &
echo \$! > $out/pid.\$name
wait
WRAP
chmod +x "$wrap"
HERD_CMD="$wrap {name} --topology {topology} --data {data}" \
  python3 ../shared/bench/compare.py . --impls product
for n in Alford Ball Hamilton Holiday Welsh; do
  pid=$(cat "$out/pid.$n")
  echo "== $n: CPU ms by thread"
  for t in /proc/$pid/task/*; do
    awk '{ c=$0; sub(/^[^(]*\(/,"",c); name=c; sub(/\).*/,"",name); sub(/^[^)]*\) /,"",c);
           split(c,f," "); print name, (f[12]+f[13])*10 }' "$t/stat"
  done | awk '{a[$1]+=$2} END {for (k in a) if (a[k]>0) printf "  %-16s %6d\n", k, a[k]}'
  kill -TERM "$pid"
done
sleep 3
ls "$out"/Alford "$out"/Hamilton
