// Optimizer updates, sums of squares and weight penalties on the GPU.
//
// Multi-tensor layout: one launch covers a list of tensors described by a table of 8 long longs
// per tensor (only tensors with n > 0 are listed):
//   [0] param  [1] grad  [2] slot0  [3] slot1  [4] slot2   (device addresses; 0 = absent)
//   [5] n      [6] first block of this tensor  [7] position of the tensor in the caller's list
// Block b of the grid belongs to the tensor whose first block is the largest one <= b (binary
// search), and updates elements [(b - first) * OPT_CHUNK, + OPT_CHUNK) of it. The grid is the
// total block count, sum over tensors of ceil(n / OPT_CHUNK).
//
// Update formulas and their operation order are those of csrc/optim_impl.h (the CPU kernels):
// rounding intrinsics keep every product and sum separately rounded (no contraction), and fma is
// used exactly where the CPU uses vfma. Gradient preparation, in this order:
//   g <- g * scale (when scale != 1); g <- clip(g, lo, hi) (NaN kept); g <- fma(l2, p, g);
//   p <- p - decay * p.
// The scale is the double `scale` (scale_mode 0), clipnorm / max(||g_t||, clipnorm) per tensor
// from its sum of squares ss[pos] (mode 1), or the same with the global norm sqrt(ss[0] + ... +
// ss[nss-1]) summed in list order (mode 2); NaN norms give a NaN scale, as on the CPU.
//
// Sums of squares: each block sums its chunk in double (per-thread strided sums, then a fixed
// shared-memory tree), writing partial[b]; a second kernel, one block per tensor, sums the
// partials of that tensor the same way into out[pos]. Fixed block size and chunk: the result is
// the same on every run. Kernels need blockDim.x == OPT_THREADS.

#define OPT_THREADS 256
#define OPT_CHUNK 4096LL
#define OPT_UNROLL 4
// The float updates with three slots: at least 4 blocks of OPT_THREADS per SM (at most 64
// registers a thread); the others fit that without being asked.
#define OPT_BOUNDS __launch_bounds__(OPT_THREADS, 4)

#define OPT_FLAG_CLIP 1
#define OPT_FLAG_L2 2
#define OPT_FLAG_DECAY 4
#define OPT_FLAG_NESTEROV 8

__device__ __forceinline__ float o_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double o_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float o_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double o_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float o_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double o_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float o_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double o_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float o_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double o_sqrt(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ float o_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double o_fma(double a, double b, double c) { return fma(a, b, c); }
__device__ __forceinline__ float o_fabs(float a) { return fabsf(a); }
__device__ __forceinline__ double o_fabs(double a) { return fabs(a); }
__device__ __forceinline__ float o_tiny(float) { return 1.17549435082228750797e-38f; }   // FLT_MIN
__device__ __forceinline__ double o_tiny(double) { return 2.22507385850720138309e-308; }  // DBL_MIN

// 0 where |x| is below the smallest normal number; NaN compares false and is kept.
template <typename T>
__device__ __forceinline__ T o_flush(T x) {
  return o_fabs(x) < o_tiny(x) ? T(0) : x;
}

// The tensor that owns block b: the largest t with table[t].first <= b.
__device__ __forceinline__ int opt_find(const long long* table, int ntensors, long long b) {
  int lo = 0, hi = ntensors - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table[8LL * mid + 6] <= b) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// The gradient scale of tensor t (see the header).
__device__ __forceinline__ double opt_scale(int scale_mode, double scale, double clipnorm, const double* ss,
                                            long long pos, int nss) {
  if (scale_mode == 0) return scale;
  double s2;
  if (scale_mode == 1) {
    s2 = ss[pos];
  } else {
    s2 = 0.0;
    for (int i = 0; i < nss; ++i) s2 = __dadd_rn(s2, ss[i]);
  }
  const double norm = __dsqrt_rn(s2);
  if (isnan(norm)) return norm;
  return __ddiv_rn(clipnorm, clipnorm > norm ? clipnorm : norm);
}

template <typename T>
struct OptPrep {
  bool scale_on, clip_on, l2_on, decay_on;
  T scale, lo, hi, l2, decay;
  __device__ __forceinline__ void apply(T& g, T& p) const {
    if (scale_on) g = o_mul(g, scale);
    if (clip_on) {
      g = hi < g ? hi : g;
      g = lo > g ? lo : g;
    }
    if (l2_on) g = o_fma(l2, p, g);
    if (decay_on) p = o_sub(p, o_mul(decay, p));
  }
};

// Everything a block needs before its loop: its tensor, its element range and the preparation.
template <typename T>
struct OptBlock {
  T *p, *s0, *s1, *s2;
  const T* g;
  long long begin, end;
  OptPrep<T> prep;
};

template <typename T>
__device__ __forceinline__ OptBlock<T> opt_block(const long long* table, int ntensors, const double* ss, int nss,
                                                 int scale_mode, double scale, double clipnorm, int flags, T lo,
                                                 T hi, T l2, T decay) {
  __shared__ double s_scale;
  const long long b = blockIdx.x;
  const int t = opt_find(table, ntensors, b);
  const long long* e = table + 8LL * t;
  OptBlock<T> ob;
  ob.p = reinterpret_cast<T*>(static_cast<unsigned long long>(e[0]));
  ob.g = reinterpret_cast<const T*>(static_cast<unsigned long long>(e[1]));
  ob.s0 = reinterpret_cast<T*>(static_cast<unsigned long long>(e[2]));
  ob.s1 = reinterpret_cast<T*>(static_cast<unsigned long long>(e[3]));
  ob.s2 = reinterpret_cast<T*>(static_cast<unsigned long long>(e[4]));
  const long long n = e[5];
  ob.begin = (b - e[6]) * OPT_CHUNK;
  ob.end = ob.begin + OPT_CHUNK < n ? ob.begin + OPT_CHUNK : n;
  if (threadIdx.x == 0) s_scale = opt_scale(scale_mode, scale, clipnorm, ss, e[7], nss);
  __syncthreads();
  const double sc = s_scale;
  ob.prep.scale_on = sc != 1.0;
  ob.prep.scale = static_cast<T>(sc);
  ob.prep.clip_on = (flags & OPT_FLAG_CLIP) != 0;
  ob.prep.l2_on = (flags & OPT_FLAG_L2) != 0;
  ob.prep.decay_on = (flags & OPT_FLAG_DECAY) != 0;
  ob.prep.lo = lo;
  ob.prep.hi = hi;
  ob.prep.l2 = l2;
  ob.prep.decay = decay;
  return ob;
}

#define OPT_COMMON_PARAMS(T)                                                                          \
  const long long *table, int ntensors, const double *ss, int nss, int scale_mode, double scale,      \
      double clipnorm, int flags, T lo, T hi, T l2, T decay
#define OPT_COMMON_ARGS table, ntensors, ss, nss, scale_mode, scale, clipnorm, flags, lo, hi, l2, decay

// Streams a block's elements OPT_UNROLL per thread at a time: every load of a group is issued
// before any store (the in-place arrays never overlap each other or the gradient), so each thread
// keeps OPT_UNROLL independent elements in flight. NS: how many slots the rule can have (the
// slots past it are never touched). `rule(g, p, a, b, c)` updates one element given
// its prepared gradient and parameter and its slot values a, b, c (slot0..2; 0 where absent);
// the results are written back to p and to the slots present. Needs blockDim.x == OPT_THREADS.
template <int NS, typename T, typename Rule>
__device__ __forceinline__ void opt_stream(const OptBlock<T>& ob, const Rule& rule) {
  constexpr int kStep = OPT_UNROLL * OPT_THREADS;
  for (long long base = ob.begin + threadIdx.x; base < ob.end; base += kStep) {
    const long long rest = ob.end - base;
    const int left = rest < kStep ? static_cast<int>(rest) : kStep;
    const T* gq = ob.g + base;
    T* pq = ob.p + base;
    T* aq = NS > 0 && ob.s0 ? ob.s0 + base : nullptr;
    T* bq = NS > 1 && ob.s1 ? ob.s1 + base : nullptr;
    T* cq = NS > 2 && ob.s2 ? ob.s2 + base : nullptr;
    T g[OPT_UNROLL], p[OPT_UNROLL], a[OPT_UNROLL], b[OPT_UNROLL], c[OPT_UNROLL];
#pragma unroll
    for (int u = 0; u < OPT_UNROLL; ++u) {
      const int o = u * OPT_THREADS;
      g[u] = T(0);
      p[u] = T(0);
      a[u] = T(0);
      b[u] = T(0);
      c[u] = T(0);
      if (o < left) {
        g[u] = gq[o];
        p[u] = pq[o];
        if (aq) a[u] = aq[o];
        if (bq) b[u] = bq[o];
        if (cq) c[u] = cq[o];
      }
    }
#pragma unroll
    for (int u = 0; u < OPT_UNROLL; ++u) {
      const int o = u * OPT_THREADS;
      if (o < left) {
        ob.prep.apply(g[u], p[u]);
        rule(g[u], p[u], a[u], b[u], c[u]);
        pq[o] = p[u];
        if (aq) aq[o] = a[u];
        if (bq) bq[o] = b[u];
        if (cq) cq[o] = c[u];
      }
    }
  }
}

// SGD: p <- p - lr * g
template <typename T>
__device__ void sgd_body(OPT_COMMON_PARAMS(T), T lr) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  opt_stream<0>(ob, [=](T g, T& p, T&, T&, T&) { p = o_sub(p, o_mul(lr, g)); });
}

// Momentum: v <- flush(mu * v - lr * g); p <- p + v  (Nesterov: p <- p + (mu * v - lr * g))
template <typename T>
__device__ void momentum_body(OPT_COMMON_PARAMS(T), T lr, T mu) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  const bool nesterov = (flags & OPT_FLAG_NESTEROV) != 0;
  opt_stream<1>(ob, [=](T g, T& p, T& v, T&, T&) {
    const T step = o_mul(lr, g);
    const T vi = o_flush(o_sub(o_mul(mu, v), step));
    v = vi;
    p = nesterov ? o_add(p, o_sub(o_mul(mu, vi), step)) : o_add(p, vi);
  });
}

// Adagrad: acc <- fma(g, g, acc); p <- p - (lr * g) / (sqrt(acc + eps_in) + eps_out)
template <typename T>
__device__ void adagrad_body(OPT_COMMON_PARAMS(T), T lr, T ein, T eout) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  opt_stream<1>(ob, [=](T g, T& p, T& acc, T&, T&) {
    const T ai = o_fma(g, g, acc);
    acc = ai;
    p = o_sub(p, o_div(o_mul(lr, g), o_add(o_sqrt(o_add(ai, ein)), eout)));
  });
}

// RMSprop: slot0 = a, slot1 = momentum (optional), slot2 = average gradient (optional).
template <typename T>
__device__ void rmsprop_body(OPT_COMMON_PARAMS(T), T lr, T rho, T one_m_rho, T mu, T ein, T eout) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  const bool has_mom = ob.s1 != nullptr, centered = ob.s2 != nullptr;
  opt_stream<3>(ob, [=](T g, T& p, T& a, T& mom, T& mg) {
    const T ai = o_flush(o_add(o_mul(rho, a), o_mul(one_m_rho, o_mul(g, g))));
    a = ai;
    T d = ai;
    if (centered) {
      const T mgi = o_flush(o_add(o_mul(rho, mg), o_mul(one_m_rho, g)));
      mg = mgi;
      d = o_sub(ai, o_mul(mgi, mgi));
    }
    const T inc = o_div(o_mul(lr, g), o_add(o_sqrt(o_add(d, ein)), eout));
    if (has_mom) {
      const T mi = o_flush(o_add(o_mul(mu, mom), inc));
      mom = mi;
      p = o_sub(p, mi);
    } else {
      p = o_sub(p, inc);
    }
  });
}

// Adam: slot0 = m, slot1 = v, slot2 = vhat (AMSGrad, optional); lr is the bias-corrected lr_t.
template <typename T>
__device__ void adam_body(OPT_COMMON_PARAMS(T), T lr, T c1, T c2, T eps) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  const bool amsgrad = ob.s2 != nullptr;
  opt_stream<3>(ob, [=](T g, T& p, T& m, T& v, T& vhat) {
    const T m0 = m, v0 = v;
    const T mi = o_flush(o_fma(o_sub(g, m0), c1, m0));
    const T vi = o_flush(o_fma(o_sub(o_mul(g, g), v0), c2, v0));
    m = mi;
    v = vi;
    T den = vi;
    if (amsgrad) {
      const T h = vhat;
      den = o_flush(h > vi ? h : vi);
      vhat = den;
    }
    p = o_sub(p, o_div(o_mul(mi, lr), o_add(o_sqrt(den), eps)));
  });
}

// Nadam: slot0 = m, slot1 = v; p <- p - fma(cm, m, cg * g) / (sqrt(v * vs) + eps)
template <typename T>
__device__ void nadam_body(OPT_COMMON_PARAMS(T), T cm, T cg, T vs, T c1, T c2, T eps) {
  const OptBlock<T> ob = opt_block<T>(OPT_COMMON_ARGS);
  opt_stream<2>(ob, [=](T g, T& p, T& m, T& v, T&) {
    const T m0 = m, v0 = v;
    const T mi = o_flush(o_fma(o_sub(g, m0), c1, m0));
    const T vi = o_flush(o_fma(o_sub(o_mul(g, g), v0), c2, v0));
    m = mi;
    v = vi;
    p = o_sub(p, o_div(o_fma(cm, mi, o_mul(cg, g)), o_add(o_sqrt(o_mul(vi, vs)), eps)));
  });
}

// Fixed-order tree sum of OPT_THREADS doubles in shared memory; the result is in buf[0].
__device__ __forceinline__ double opt_tree(double* buf, double v) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int w = OPT_THREADS / 2; w >= 1; w >>= 1) {
    if (threadIdx.x < w) buf[threadIdx.x] = __dadd_rn(buf[threadIdx.x], buf[threadIdx.x + w]);
    __syncthreads();
  }
  return buf[0];
}

// partial[b] = sum over block b's chunk of the table's grad field: x^2 (mode 0) or |x| (mode 1).
template <typename T>
__device__ void sumsq_partial_body(const long long* table, int ntensors, int mode, double* partial) {
  __shared__ double buf[OPT_THREADS];
  const long long b = blockIdx.x;
  const int t = opt_find(table, ntensors, b);
  const long long* e = table + 8LL * t;
  const T* x = reinterpret_cast<const T*>(static_cast<unsigned long long>(e[1]));
  const long long n = e[5];
  const long long begin = (b - e[6]) * OPT_CHUNK;
  const long long end = begin + OPT_CHUNK < n ? begin + OPT_CHUNK : n;
  double acc = 0.0;
  for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double v = static_cast<double>(x[i]);
    acc = mode == 0 ? __dadd_rn(acc, __dmul_rn(v, v)) : __dadd_rn(acc, fabs(v));
  }
  const double total = opt_tree(buf, acc);
  if (threadIdx.x == 0) partial[b] = total;
}

// out[pos of tensor t] = sum of the partials of tensor t; one block per tensor (grid = ntensors).
__device__ void sumsq_finish_body(const long long* table, const double* partial, double* out) {
  __shared__ double buf[OPT_THREADS];
  const long long* e = table + 8LL * blockIdx.x;
  const long long first = e[6];
  const long long nb = (e[5] + OPT_CHUNK - 1) / OPT_CHUNK;
  double acc = 0.0;
  for (long long i = threadIdx.x; i < nb; i += blockDim.x) acc = __dadd_rn(acc, partial[first + i]);
  const double total = opt_tree(buf, acc);
  if (threadIdx.x == 0) out[e[7]] = total;
}

// Regularizer gradient (Keras): g = l1 * sign(w) + 2 l2 * w, as the CPU computes it:
// g = 0; g += l1c * sign(w) (when l1 is on); g += l2c * w (when l2 is on), l2c = 2 * l2.
template <typename T>
__device__ void l1l2_grad_body(const T* w, T* g, long long n, int use_l1, int use_l2, T l1c, T l2c) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
    const T wi = w[i];
    T gi = T(0);
    if (use_l1) {
      const T s = wi > T(0) ? T(1) : (wi < T(0) ? T(-1) : (wi == T(0) ? T(0) : wi));
      gi = o_add(gi, o_mul(l1c, s));
    }
    if (use_l2) gi = o_add(gi, o_mul(l2c, wi));
    g[i] = gi;
  }
}

extern "C" {
__global__ void sgd_update_f32(OPT_COMMON_PARAMS(float), float lr) { sgd_body<float>(OPT_COMMON_ARGS, lr); }
__global__ void sgd_update_f64(OPT_COMMON_PARAMS(double), double lr) { sgd_body<double>(OPT_COMMON_ARGS, lr); }
__global__ void momentum_update_f32(OPT_COMMON_PARAMS(float), float lr, float mu) {
  momentum_body<float>(OPT_COMMON_ARGS, lr, mu);
}
__global__ void momentum_update_f64(OPT_COMMON_PARAMS(double), double lr, double mu) {
  momentum_body<double>(OPT_COMMON_ARGS, lr, mu);
}
__global__ void adagrad_update_f32(OPT_COMMON_PARAMS(float), float lr, float ein, float eout) {
  adagrad_body<float>(OPT_COMMON_ARGS, lr, ein, eout);
}
__global__ void adagrad_update_f64(OPT_COMMON_PARAMS(double), double lr, double ein, double eout) {
  adagrad_body<double>(OPT_COMMON_ARGS, lr, ein, eout);
}
__global__ void OPT_BOUNDS rmsprop_update_f32(OPT_COMMON_PARAMS(float), float lr, float rho, float one_m_rho, float mu,
                                   float ein, float eout) {
  rmsprop_body<float>(OPT_COMMON_ARGS, lr, rho, one_m_rho, mu, ein, eout);
}
__global__ void rmsprop_update_f64(OPT_COMMON_PARAMS(double), double lr, double rho, double one_m_rho, double mu,
                                   double ein, double eout) {
  rmsprop_body<double>(OPT_COMMON_ARGS, lr, rho, one_m_rho, mu, ein, eout);
}
__global__ void OPT_BOUNDS adam_update_f32(OPT_COMMON_PARAMS(float), float lr, float c1, float c2, float eps) {
  adam_body<float>(OPT_COMMON_ARGS, lr, c1, c2, eps);
}
__global__ void adam_update_f64(OPT_COMMON_PARAMS(double), double lr, double c1, double c2, double eps) {
  adam_body<double>(OPT_COMMON_ARGS, lr, c1, c2, eps);
}
__global__ void OPT_BOUNDS nadam_update_f32(OPT_COMMON_PARAMS(float), float cm, float cg, float vs, float c1, float c2,
                                 float eps) {
  nadam_body<float>(OPT_COMMON_ARGS, cm, cg, vs, c1, c2, eps);
}
__global__ void nadam_update_f64(OPT_COMMON_PARAMS(double), double cm, double cg, double vs, double c1, double c2,
                                 double eps) {
  nadam_body<double>(OPT_COMMON_ARGS, cm, cg, vs, c1, c2, eps);
}
__global__ void sumsq_partial_f32(const long long* table, int ntensors, int mode, double* partial) {
  sumsq_partial_body<float>(table, ntensors, mode, partial);
}
__global__ void sumsq_partial_f64(const long long* table, int ntensors, int mode, double* partial) {
  sumsq_partial_body<double>(table, ntensors, mode, partial);
}
__global__ void sumsq_finish_f32(const long long* table, const double* partial, double* out) {
  sumsq_finish_body(table, partial, out);
}
__global__ void sumsq_finish_f64(const long long* table, const double* partial, double* out) {
  sumsq_finish_body(table, partial, out);
}
__global__ void l1l2_grad_f32(const float* w, float* g, long long n, int use_l1, int use_l2, float l1c, float l2c) {
  l1l2_grad_body<float>(w, g, n, use_l1, use_l2, l1c, l2c);
}
__global__ void l1l2_grad_f64(const double* w, double* g, long long n, int use_l1, int use_l2, double l1c,
                              double l2c) {
  l1l2_grad_body<double>(w, g, n, use_l1, use_l2, l1c, l2c);
}
}
