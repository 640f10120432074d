mk() { # dtype rows badrow
cat <<PY
import numpy as np, pydl, faulthandler; faulthandler.enable()
from pydl import ops
p=np.full(($2,4),0.25,np.$1); y=np.zeros($2,np.int64); y[$3]=4
try: ops.loss("sparse_categorical_crossentropy", y, p)
except ValueError as e: print("OK raised")
PY
}
for c in "float64 3 1" "float32 3 1" "float64 9 3" "float32 9 3" "float32 9 0"; do
  set -- $c; printf "%-16s " "$c"; python -c "$(mk $1 $2 $3)" 2>&1 | grep -E "OK|Fatal|line" | head -3 | tr '\n' ' '; echo " rc=${PIPESTATUS[0]}"
done
for env in "PYDL_ISA=avx2" "PYDL_ISA=generic" "OMP_NUM_THREADS=1"; do
  printf "%-16s " "$env f32 9 3"; env $env python -c "$(mk float32 9 3)" 2>&1 | grep -E "OK|Fatal" | head -2 | tr '\n' ' '; echo
done
printf "good labels f32: "; python -c "import numpy as np, pydl; p=np.full((9,4),0.25,np.float32); print(pydl.ops.loss('sparse_categorical_crossentropy', np.zeros(9,np.int64), p)[0])" 2>&1 | tail -1
if command -v gdb >/dev/null; then python -c "$(mk float32 9 3)" > /tmp/s.py 2>/dev/null; mk float32 9 3 > /tmp/s.py; gdb -q -batch -ex run -ex bt --args python /tmp/s.py 2>&1 | grep -E "^#" | head -12; else echo "no gdb"; fi
