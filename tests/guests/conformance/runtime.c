/* Runtime of the conformance guests: console, formatting, reporting, traps. */
#include "conf.h"

struct start_info *si;
volatile struct shared_info *shinfo;
u64 *p2m;
trap_fn trap_hooks[258];

static const char *cur_test;
static int cur_failed;
static char cur_detail[200];
static unsigned int n_pass, n_fail, n_xfail;

/* The page shared_info is mapped over (its own frame stays unused). */
static char shinfo_page[4096] PAGE_ALIGNED;

void *memset(void *d, int c, unsigned long n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, unsigned long n)
{
	const u8 *p = a, *q = b;
	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

unsigned long strlen(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

void console_write(const char *s, unsigned long n)
{
	HC3(HC_console_io, 0, n, s);
}

struct buf {
	char *p;
	unsigned long len, cap;
};

static void put(struct buf *b, char c)
{
	if (b->len + 1 < b->cap)
		b->p[b->len++] = c;
}

static void put_num(struct buf *b, u64 v, unsigned base, int neg, int width, char pad)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	while (width-- > n)
		put(b, pad);
	while (n)
		put(b, tmp[--n]);
}

/* %s %c %d %u %x %p with optional 'l', '#', zero padding and width. */
static void vformat(struct buf *b, const char *fmt, __builtin_va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			put(b, *fmt);
			continue;
		}
		fmt++;
		int alt = 0, lng = 0, width = 0;
		char pad = ' ';
		if (*fmt == '#')
			alt = 1, fmt++;
		if (*fmt == '0')
			pad = '0', fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng = 1, fmt++;
		switch (*fmt) {
		case 's': {
			const char *s = __builtin_va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			while (*s)
				put(b, *s++);
			break;
		}
		case 'c':
			put(b, (char)__builtin_va_arg(ap, int));
			break;
		case 'd': {
			s64 v = lng ? __builtin_va_arg(ap, s64) : __builtin_va_arg(ap, int);
			put_num(b, v < 0 ? -(u64)v : (u64)v, 10, v < 0, width, pad);
			break;
		}
		case 'u': {
			u64 v = lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, unsigned);
			put_num(b, v, 10, 0, width, pad);
			break;
		}
		case 'p':
			alt = 1, lng = 1;
			/* fall through */
		case 'x': {
			u64 v = lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, unsigned);
			if (alt)
				put(b, '0'), put(b, 'x');
			put_num(b, v, 16, 0, width, pad);
			break;
		}
		case '%':
			put(b, '%');
			break;
		default:
			put(b, '?');
			break;
		}
	}
	b->p[b->len] = 0;
}

void printk(const char *fmt, ...)
{
	char out[512];
	struct buf b = { out, 0, sizeof(out) };
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	vformat(&b, fmt, ap);
	__builtin_va_end(ap);
	console_write(out, b.len);
}

__attribute__((noreturn)) void poweroff(void)
{
	u32 reason = 0;
	for (;;)
		HC2(HC_sched_op, 2, &reason);
}

void begin(const char *name)
{
	cur_test = name;
	cur_failed = 0;
	cur_detail[0] = 0;
}

void expect(int ok, const char *fmt, ...)
{
	if (ok || cur_failed++)
		return;
	struct buf b = { cur_detail, 0, sizeof(cur_detail) };
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	vformat(&b, fmt, ap);
	__builtin_va_end(ap);
}

int test_failed(void)
{
	return cur_failed;
}

void end(void)
{
	if (cur_failed) {
		n_fail++;
		printk("CONFORMANCE %s: FAIL %s\n", cur_test, cur_detail);
	} else {
		n_pass++;
		printk("CONFORMANCE %s: PASS\n", cur_test);
	}
	cur_test = 0;
}

void end_xfail(const char *reason)
{
	if (cur_failed) {
		n_xfail++;
		printk("CONFORMANCE %s: XFAIL %s (%s)\n", cur_test, reason, cur_detail);
	} else {
		n_pass++;
		printk("CONFORMANCE %s: PASS (expected to fail: %s; remove the XFAIL marker)\n",
		       cur_test, reason);
	}
	cur_test = 0;
}

__attribute__((noreturn)) void done(void)
{
	printk("CONFORMANCE-DONE %u passed, %u failed, %u xfail\n", n_pass, n_fail, n_xfail);
	poweroff();
}

/* An exception nobody expected: report it against the running test and stop. */
static void unexpected_trap(struct regs *r)
{
	u64 *f = regs_iret(r);
	u64 cr2 = shinfo ? shinfo->vcpu_info[0].cr2 : 0;
	n_fail++;
	printk("CONFORMANCE %s: FAIL unexpected trap %u (error %lx) at rip %lx, cr2 %lx\n",
	       cur_test ? cur_test : "runtime", regs_vector(r), regs_has_err(r) ? r->w[0] : 0,
	       f[0], cr2);
	done();
}

void trap_dispatch(struct regs *r)
{
	unsigned v = regs_vector(r);
	trap_fn f = v < 258 ? trap_hooks[v] : 0;
	if (!f)
		unexpected_trap(r);
	f(r);
}

void *trap_stub(unsigned int vector)
{
	extern char trap_stub_0x80[];
	if (vector < 32)
		return trap_stub_table + 16 * vector;
	if (vector == 0x80)
		return trap_stub_0x80;
	return 0;
}

long update_va_mapping(void *va, u64 pte, u64 flags)
{
	return HC3(HC_update_va_mapping, va, pte, flags);
}

long mmuext(u32 cmd, u64 arg1, u64 arg2)
{
	struct mmuext_op op = { .cmd = cmd, .arg1 = arg1, .arg2 = arg2 };
	return HC4(HC_mmuext_op, &op, 1, 0, DOMID_SELF);
}

long set_traps(const struct trap_info *t)
{
	return HC1(HC_set_trap_table, t);
}

long register_callback(u16 type, u16 flags, void *addr)
{
	struct {
		u16 type, flags;
		u32 pad;
		u64 address;
	} cb = { type, flags, 0, (u64)addr };
	return HC2(HC_callback_op, 0, &cb);
}

u64 now_ns(void)
{
	volatile struct vcpu_time_info *t = &shinfo->vcpu_info[0].time;
	u32 ver;
	u64 r;
	do {
		ver = t->version;
		barrier();
		u64 delta = rdtsc() - t->tsc_timestamp;
		s8 shift = t->tsc_shift;
		if (shift < 0)
			delta >>= -shift;
		else
			delta <<= shift;
		r = t->system_time + (u64)(((unsigned __int128)delta * t->tsc_to_system_mul) >> 32);
		barrier();
	} while ((ver & 1) || ver != t->version);
	return r;
}

/* Page-table walk of the boot tables (all mapped at VIRT_BASE + pfn). */
static volatile u64 *next_table(volatile u64 *t, unsigned idx)
{
	u64 e = t[idx];
	if (!(e & _PAGE_PRESENT))
		return 0;
	return mfn_to_va((e & PTE_ADDR_MASK) >> 12);
}

volatile u64 *pte_ptr(const void *va, int level)
{
	u64 a = (u64)va;
	volatile u64 *t = (volatile u64 *)si->pt_base;
	for (int lvl = 4; lvl > level && t; lvl--)
		t = next_table(t, (a >> (12 + 9 * (lvl - 1))) & 511);
	return t ? &t[(a >> (12 + 9 * (level - 1))) & 511] : 0;
}

volatile u64 *l1e_ptr(const void *va)
{
	return pte_ptr(va, 1);
}

u64 maddr_of(volatile const void *p)
{
	return (va_to_mfn((const void *)p) << 12) | ((u64)p & 0xfff);
}

u64 l1e_maddr(const void *va)
{
	volatile u64 *p = l1e_ptr(va);
	return p ? maddr_of(p) : 0;
}

void runtime_start(struct start_info *start)
{
#ifdef FREESTANDING
	/* Every hypercall goes through the page: the builder must have filled it. */
	if (hypercall_page[0] != 0x51) {
		static const char msg[] = "CONFORMANCE runtime: FAIL the hypercall page is empty\n";
		u32 crash = 3;
		hypercall_syscall(HC_console_io, 0, sizeof(msg) - 1, (long)msg, 0, 0);
		for (;;)
			hypercall_syscall(HC_sched_op, 2, (long)&crash, 0, 0, 0);
	}
#endif
	si = start;
	p2m = (u64 *)si->mfn_list;
	/* Catch-all trap table: any unexpected exception is reported, not fatal. */
	static struct trap_info traps[33];
	for (int v = 0; v < 32; v++) {
		traps[v].vector = v;
		traps[v].flags = 0;
		traps[v].cs = FLAT_KERNEL_CS;
		traps[v].address = (u64)trap_stub(v);
	}
	traps[32].address = 0;
	if (set_traps(traps) != 0) {
		printk("CONFORMANCE runtime: FAIL set_trap_table\n");
		done();
	}
	long rc = update_va_mapping(shinfo_page, si->shared_info | _PAGE_PRESENT | _PAGE_RW,
				    UVMF_INVLPG);
	if (rc != 0) {
		printk("CONFORMANCE runtime: FAIL mapping shared_info: %ld\n", rc);
		done();
	}
	shinfo = (volatile struct shared_info *)shinfo_page;
	test_main();
	done();
}
