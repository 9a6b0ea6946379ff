/* PV MMU: mmu_update/mmuext_op/update_va_mapping validation and writable page tables. */
#include "conf.h"

#define MMU_NORMAL_PT_UPDATE 0
#define MMU_MACHPHYS_UPDATE 1
#define MMUEXT_INVLPG_LOCAL 7
#define PTE_RO (_PAGE_PRESENT | _PAGE_ACCESSED)
#define PTE_RW (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define PTE_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY)
#define GUEST_KERNEL (1UL << 52)
#define _PAGE_GLOBAL 0x100UL
#define AD (_PAGE_ACCESSED | _PAGE_DIRTY)
/* An L2 slot of the boot mapping far beyond the bootstrap region. */
#define HOOK_VA 0xffffffff99000000UL

static char scratch[4096] PAGE_ALIGNED;
static char data[4096] PAGE_ALIGNED;
static u64 pt1[512] PAGE_ALIGNED;
static char wpage[4096] PAGE_ALIGNED;

u64 m_resume;
static volatile int pf_hits;
static volatile u64 pf_err, pf_cr2;

static void on_pf(struct regs *r)
{
	pf_hits++;
	pf_err = r->w[0];
	pf_cr2 = shinfo->vcpu_info[0].cr2;
	regs_iret(r)[0] = m_resume;
}

/* *p = v with a plain store; a #PF skips the store (counted in pf_hits). */
static void store(volatile u64 *p, u64 v)
{
	__asm__ volatile("leaq 1f(%%rip), %%rax\n\t"
			 "movq %%rax, m_resume(%%rip)\n\t"
			 "movq %1, (%0)\n"
			 "1:"
			 :
			 : "r"(p), "r"(v)
			 : "rax", "memory");
}

static long mmu_update1(u64 ptr, u64 val)
{
	struct mmu_update u = { ptr, val };
	return HC4(HC_mmu_update, &u, 1, 0, DOMID_SELF);
}

static void invlpg(const void *va)
{
	mmuext(MMUEXT_INVLPG_LOCAL, (u64)va, 0);
}

static u64 mfn_of_l4(void)
{
	return va_to_mfn((void *)si->pt_base);
}

void test_main(void)
{
	volatile u64 *sl1e = l1e_ptr(scratch);
	const u64 s_maddr = l1e_maddr(scratch);
	const u64 s_orig = *sl1e;
	/* The entry as a guest writes it fresh: validation adds US and bit 52. */
	const u64 s_fresh = s_orig & ~(_PAGE_USER | GUEST_KERNEL | _PAGE_ACCESSED | _PAGE_DIRTY);
	const u64 l4 = mfn_of_l4();
	long rc;

	trap_hooks[14] = on_pf;

	begin("mmu.boot_tables");
	expect(sl1e != 0, "no L1 entry for the kernel image");
	EXPECT_EQ((s_orig & PTE_ADDR_MASK) >> 12, va_to_mfn(scratch));
	EXPECT_EQ(s_orig & (_PAGE_PRESENT | _PAGE_RW), _PAGE_PRESENT | _PAGE_RW);
	/* Validation adds US and Xen's "guest kernel page" bit 52 to kernel pages. */
	EXPECT_EQ(s_orig & (_PAGE_USER | GUEST_KERNEL), _PAGE_USER | GUEST_KERNEL);
	/* The page tables themselves are mapped read-only. */
	EXPECT_EQ(*l1e_ptr((void *)si->pt_base) & _PAGE_RW, 0);
	EXPECT_EQ(*l1e_ptr((const void *)l1e_ptr(scratch)) & _PAGE_RW, 0);
	end();

	begin("mmu.map_page_table_writable_refused");
	EXPECT_EQ(mmu_update1(s_maddr | MMU_NORMAL_PT_UPDATE, (l4 << 12) | PTE_RW), -EINVAL);
	EXPECT_EQ(update_va_mapping(scratch, (l4 << 12) | PTE_RW, UVMF_INVLPG), -EINVAL);
	/* An L1 of the boot mapping, too. */
	u64 l1mfn = s_maddr >> 12;
	EXPECT_EQ(mmu_update1(s_maddr, (l1mfn << 12) | PTE_RW), -EINVAL);
	EXPECT_EQ(*sl1e, s_orig);
	end();

	begin("mmu.map_foreign_frame_refused");
	EXPECT_EQ(mmu_update1(s_maddr, ((si->nr_pages + 10) << 12) | PTE_RO), -EINVAL);
	EXPECT_EQ(mmu_update1(s_maddr, ((si->nr_pages + 10) << 12) | PTE_RW), -EINVAL);
	EXPECT_EQ(update_va_mapping(scratch, (0xfffff0UL << 12) | PTE_RO, UVMF_INVLPG), -EINVAL);
	EXPECT_EQ(*sl1e, s_orig);
	end();

	begin("mmu.reserved_l4_slots_refused");
	volatile u64 *l4t = (volatile u64 *)si->pt_base;
	u64 l3e = l4t[511];
	const u64 l4_maddr = l4 << 12;
	EXPECT_EQ(mmu_update1(l4_maddr + 256 * 8, l3e), -EINVAL);
	EXPECT_EQ(mmu_update1(l4_maddr + 260 * 8, 0), -EINVAL);
	EXPECT_EQ(mmu_update1(l4_maddr + 271 * 8, l3e), -EINVAL);
	end();

	begin("mmu.l4_guest_slot_alias");
	/* L4 slot 272 may be used: alias the kernel's L3 there and read through it. */
	rc = mmu_update1(l4_maddr + 272 * 8, l3e & ~(GUEST_KERNEL));
	EXPECT_EQ(rc, 0);
	if (rc == 0) {
		u64 alias = 0xffff880000000000UL + (510UL << 30) + ((u64)scratch - VIRT_BASE);
		scratch[100] = 0x42;
		barrier();
		EXPECT_EQ(*(volatile char *)(alias + 100), 0x42);
		EXPECT_EQ(mmu_update1(l4_maddr + 272 * 8, 0), 0);
		mmuext(6 /* TLB_FLUSH_LOCAL */, 0, 0);
	}
	end();

	begin("mmu.readonly_page_table_mapping");
	rc = mmu_update1(s_maddr, (l4 << 12) | PTE_RO);
	EXPECT_EQ(rc, 0);
	invlpg(scratch);
	if (rc == 0) {
		EXPECT_EQ(((volatile u64 *)scratch)[511], l4t[511]);
		/* And a store through it faults. */
		pf_hits = 0;
		store((volatile u64 *)scratch + 511, l4t[511]);
		EXPECT_EQ(pf_hits, 1);
		EXPECT_EQ(pf_err & 7, 3); /* present, write, kernel */
	}
	EXPECT_EQ(update_va_mapping(scratch, s_fresh, UVMF_INVLPG), 0);
	scratch[0] = 1; /* writable again */
	EXPECT_EQ(*sl1e & ~AD, s_orig & ~AD);
	end();

	/*
	 * Linux writes back PTE values it read, bit 52 included: an entry with
	 * US and _PAGE_GUEST_KERNEL is a kernel page and must not become global
	 * (Xen's adjust_guest_l1e adds G only to entries without bit 52).
	 */
	begin("mmu.kernel_pte_readback_not_global");
	EXPECT_EQ(update_va_mapping(scratch, *sl1e, UVMF_INVLPG), 0);
	EXPECT_EQ(*sl1e & _PAGE_GLOBAL, 0);
	EXPECT_EQ(*sl1e & ~AD, s_orig & ~AD);
	if (*sl1e & _PAGE_GLOBAL)
		end_xfail("a kernel PTE written back with US|bit 52 gets G added (mmu.rs get_entry_refs)");
	else
		end();
	EXPECT_EQ(update_va_mapping(scratch, s_fresh, UVMF_INVLPG), 0);

	begin("mmu.mmu_update_pdone");
	struct mmu_update two[2] = { { s_maddr, s_fresh },
				     { s_maddr, ((si->nr_pages + 10) << 12) | PTE_RO } };
	u32 done = 99;
	rc = HC4(HC_mmu_update, two, 2, &done, DOMID_SELF);
	EXPECT_EQ(rc, -EINVAL);
	EXPECT_EQ(done, 1);
	EXPECT_EQ(*sl1e & ~AD, s_orig & ~AD);
	end();

	begin("mmu.update_va_mapping_no_l1");
	EXPECT_EQ(update_va_mapping((void *)0x1000, (va_to_mfn(data) << 12) | PTE_RO, 0), -EINVAL);
	end();

	begin("mmu.machphys_update");
	u64 dmfn = va_to_mfn(data);
	EXPECT_EQ(mmu_update1((dmfn << 12) | MMU_MACHPHYS_UPDATE, va_to_pfn(data)), 0);
	EXPECT_EQ(mmu_update1(((si->nr_pages + 10) << 12) | MMU_MACHPHYS_UPDATE, 5), -EINVAL);
	end();

	begin("mmu.pin_writable_page_refused");
	memset(wpage, 0, sizeof(wpage));
	EXPECT_EQ(mmuext(MMUEXT_PIN_L1_TABLE, va_to_mfn(wpage), 0), -EINVAL);
	EXPECT_EQ(mmuext(MMUEXT_UNPIN_TABLE, va_to_mfn(wpage), 0), -EINVAL); /* not pinned */
	end();

	begin("mmu.pin_l1");
	const u64 p1 = va_to_mfn(pt1);
	memset(pt1, 0, sizeof(pt1));
	EXPECT_EQ(update_va_mapping(pt1, (p1 << 12) | PTE_RO, UVMF_INVLPG), 0);
	rc = mmuext(MMUEXT_PIN_L1_TABLE, p1, 0);
	EXPECT_EQ(rc, 0);
	EXPECT_EQ(mmuext(MMUEXT_PIN_L1_TABLE, p1, 0), -EINVAL); /* already pinned */
	EXPECT_EQ(update_va_mapping(pt1, (p1 << 12) | PTE_RW, UVMF_INVLPG), -EINVAL);
	end();
	if (rc != 0)
		return;

	/* Writable page tables: plain stores to a pinned L1 are validated and applied. */
	begin("mmu.ptwr_store");
	HC2(HC_vm_assist, 0, 2);
	data[0] = 0x5c;
	pf_hits = 0;
	store(&pt1[5], (dmfn << 12) | PTE_RO);
	EXPECT_EQ(pf_hits, 0);
	EXPECT_EQ(pt1[5] & PTE_ADDR_MASK, dmfn << 12);
	EXPECT_EQ(pt1[5] & (PTE_RO | _PAGE_USER | GUEST_KERNEL), PTE_RO | _PAGE_USER | GUEST_KERNEL);
	end();

	begin("mmu.ptwr_refused_store_faults");
	pf_hits = 0;
	store(&pt1[6], (l4 << 12) | PTE_RW); /* would map a page table writable */
	EXPECT_EQ(pf_hits, 1);
	EXPECT_EQ(pf_err & 7, 3);
	EXPECT_EQ(pf_cr2, (u64)&pt1[6]);
	EXPECT_EQ(pt1[6], 0);
	end();

	begin("mmu.hook_new_l1");
	/* Hook the pinned L1 into a free slot of the boot L2 and use its mapping. */
	volatile u64 *l2e = pte_ptr((void *)HOOK_VA, 2);
	EXPECT_EQ(*l2e, 0);
	const u64 l2e_maddr = maddr_of(l2e);
	rc = mmu_update1(l2e_maddr, (p1 << 12) | PTE_TABLE);
	EXPECT_EQ(rc, 0);
	if (rc == 0) {
		volatile char *hooked = (volatile char *)(HOOK_VA + 5 * 4096);
		EXPECT_EQ(hooked[0], 0x5c);
		pf_hits = 0;
		store((volatile u64 *)hooked, 1); /* mapped read-only */
		EXPECT_EQ(pf_hits, 1);
		EXPECT_EQ(pf_cr2, (u64)hooked);
		EXPECT_EQ(mmu_update1(l2e_maddr, 0), 0);
		mmuext(6 /* TLB_FLUSH_LOCAL */, 0, 0);
	}
	end();

	begin("mmu.unpin_and_reuse");
	store(&pt1[5], 0);
	EXPECT_EQ(pt1[5], 0);
	EXPECT_EQ(mmuext(MMUEXT_UNPIN_TABLE, p1, 0), 0);
	EXPECT_EQ(update_va_mapping(pt1, (p1 << 12) | PTE_RW, UVMF_INVLPG), 0);
	pt1[0] = 0x1234; /* an ordinary page again */
	EXPECT_EQ(pt1[0], 0x1234);
	end();
}
