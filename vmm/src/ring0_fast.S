# xenkvm: the per-vCPU SYSCALL entry on hardware hosts (VT-x / AMD-V).
# Runs in ring 0 on the guest's stack, IF=0 (FMASK). RCX = guest RIP,
# R11 = guest RFLAGS, RAX = hypercall number. The data page follows at +0x1000.
#
# A path changes the guest's mode (kernel <-> user: CR3, GS base, kmode) only
# after everything that can fault is done, and `kmode` is written last: the
# monitor reads it after every exit as the vCPU's mode. A fault before that
# point is redone the slow way from the registers saved on entry.
        .code64
# The upcall mask follows the IF of the frame at (%rsp); RCX = vcpu_info.
# Events pending after an unmask: slow (the monitor delivers them).
        .macro iret_mask
        testl $0x200, 48(%rsp)     # events enabled after the return?
        jz 8f
        xor %eax, %eax
        xchg %al, 1(%rcx)          # evtchn_upcall_mask = 0 (locked: a full barrier)
        cmpb $0, (%rcx)            # evtchn_upcall_pending
        jne slow
        jmp 9f
8:      movb $1, 1(%rcx)           # evtchn_upcall_mask = 1
9:
        .endm
# Xen's swapgs on a mode change: the GS base now running is kept in
# `keep`, the one in `load` is loaded (MSR_GS_BASE; clobbers RAX RCX RDX).
        .macro swap_gs keep, load
        mov $0xc0000101, %ecx
        rdmsr
        mov %eax, \keep(%rip)
        mov %edx, \keep+4(%rip)
        mov \load(%rip), %eax
        mov \load+4(%rip), %edx
        wrmsr
        .endm
entry:
        mov %rcx, save_rcx(%rip)
        mov %r11, save_r11(%rip)
        mov %rsp, save_rsp(%rip)
        mov %rax, save_rax(%rip)
        mov %rdx, save_rdx(%rip)
        cmpb $0, kmode(%rip)
        je user_syscall            # guest user mode's own SYSCALL
        cmp $23, %rax              # __HYPERVISOR_iret
        je iret
        cmp $24, %rax              # __HYPERVISOR_vcpu_op
        je vcpu_op
        cmp $3, %rax               # __HYPERVISOR_stack_switch
        je stack_switch
        cmp $25, %rax              # __HYPERVISOR_set_segment_base
        je segbase
slow:
        mov save_rcx(%rip), %rcx
        mov save_r11(%rip), %r11
        mov save_rsp(%rip), %rsp
        mov save_rax(%rip), %rax
        mov save_rdx(%rip), %rdx
        out %al, $0xf0             # exit: the monitor handles the SYSCALL
        ud2
iret:   # frame at (%rsp): rax r11 rcx flags rip cs rflags rsp ss
        movabs $0x800000000047, %rcx   # rcx = rsp - (0xffff800000000000 - 71)
        add %rsp, %rcx
        movabs $0x80000000047, %rax
        cmp %rax, %rcx             # frame [rsp, rsp+72) touches slots 256-271: slow
        jb slow                    # (this code must never read or write the monitor's area)
        mov vcpu_info(%rip), %rcx
        test %rcx, %rcx
        jz slow
        testb $3, 40(%rsp)         # to guest user mode
        jnz iret_user
        testl $0x100, 24(%rsp)     # VGCF_in_syscall to kernel mode: slow
        jnz slow
        iret_mask
        orq $3, 40(%rsp)           # CS RPL 3
        orq $3, 64(%rsp)           # SS RPL 3
        mov 48(%rsp), %r11
        and $0x3d4fd7, %r11        # the architectural flags less IOPL and VM, as the slow path
        or $0x202, %r11            # IF, bit 1
        mov %r11, 48(%rsp)
        incq n_iret(%rip)
        mov 8(%rsp), %r11
        mov 16(%rsp), %rcx
        mov (%rsp), %rax
        add $32, %rsp
        iretq
iret_user:  # to guest user mode: user page tables and GS base, as Xen's toggle_guest_mode
        cmpq $0, user_cr3(%rip)    # no user page table yet: slow (the monitor refuses it)
        je slow
        movzwl 40(%rsp), %eax      # only the flat user selectors
        or $3, %eax
        cmp $0x33, %eax            # __USER_CS
        je 1f
        cmp $0xe033, %eax          # FLAT_RING3_CS64
        jne slow
1:      mov %rax, if_cs(%rip)
        movzwl 64(%rsp), %eax
        or $3, %eax
        cmp $0x2b, %eax            # __USER_DS
        je 2f
        cmp $0xe02b, %eax          # FLAT_RING3_SS64
        jne slow
2:      mov %rax, if_ss(%rip)
        mov 32(%rsp), %rax
        mov %rax, if_rip(%rip)
        mov 56(%rsp), %rax
        mov %rax, if_rsp(%rip)
        mov 48(%rsp), %rax
        and $0x3d4fd7, %rax
        or $0x202, %rax
        mov %rax, if_rflags(%rip)
        mov (%rsp), %rax           # the registers to return with
        mov %rax, ret_rax(%rip)
        mov 8(%rsp), %rax
        mov %rax, ret_r11(%rip)
        mov 16(%rsp), %rax
        mov %rax, ret_rcx(%rip)
        testl $0x100, 24(%rsp)     # VGCF_in_syscall: RCX and R11 stay the hypercall's own
        jz 3f
        mov save_rcx(%rip), %rax
        mov %rax, ret_rcx(%rip)
        mov save_r11(%rip), %rax
        mov %rax, ret_r11(%rip)
3:      iret_mask
        mov user_cr3(%rip), %rax   # no guest memory is touched from here on
        mov %rax, %cr3
        swap_gs gs_kernel, gs_user # keep the kernel's GS base, load the user's
        movb $0, kmode(%rip)       # committed: guest user mode
        incq n_iret_user(%rip)
        mov save_rdx(%rip), %rdx
        mov ret_rax(%rip), %rax
        mov ret_rcx(%rip), %rcx
        mov ret_r11(%rip), %r11
        lea if_rip(%rip), %rsp
user_iretq:
        iretq
user_syscall:   # bounce to the guest kernel's syscall callback, as Xen's create_bounce_frame
        cmpq $0, syscall_cb(%rip)
        je slow
        cmpq $0, kernel_cr3(%rip)
        je slow
        mov vcpu_info(%rip), %rcx
        test %rcx, %rcx
        jz slow
        movzbl 1(%rcx), %eax       # the mask now (0 or 1), saved in the frame
        test %eax, %eax
        jz 2f
        mov $1, %eax
        jmp 1f
2:
        cmpb $0, masks(%rip)       # events stay enabled in the callback and one is pending:
        jne 1f
        cmpb $0, (%rcx)            # slow (the monitor delivers it)
        jne slow
1:      mov kernel_sp(%rip), %rsp  # the guest kernel stack (stack_switch), 16-byte aligned
        and $-16, %rsp
        sub $56, %rsp              # frame [rsp, rsp+56)
        movabs $0x800000000037, %rdx   # rdx = rsp - (0xffff800000000000 - 55)
        add %rsp, %rdx
        movabs $0x80000000037, %rcx
        cmp %rcx, %rdx             # touches slots 256-271: slow
        jb slow
        mov kernel_cr3(%rip), %rcx # the kernel's page tables map its stack
        mov %rcx, %cr3
        mov save_rcx(%rip), %rcx
        mov %rcx, (%rsp)           # RCX
        mov %rcx, 16(%rsp)         # RIP
        mov save_r11(%rip), %rdx
        mov %rdx, 8(%rsp)          # R11
        movq $0xe033, 24(%rsp)     # CS (FLAT_KERNEL_CS, as Xen's syscall entry) ...
        mov %eax, 28(%rsp)         # ... with the saved upcall mask in bits 32-39
        and $-0x3201, %rdx         # RFLAGS less IF and IOPL ...
        xor $1, %eax
        shl $9, %eax
        or %rax, %rdx              # ... IF = events were enabled
        mov %rdx, 32(%rsp)
        mov save_rsp(%rip), %rdx
        mov %rdx, 40(%rsp)         # RSP
        movq $0xe02b, 48(%rsp)     # SS
        mov syscall_cb(%rip), %rax # the return frame, in the data page
        mov %rax, if_rip(%rip)
        movq $0xe033, if_cs(%rip)
        mov save_r11(%rip), %rax
        and $-0x77501, %rax        # less TF NT RF VM AC IOPL DF
        or $0x202, %rax            # IF, bit 1
        mov %rax, if_rflags(%rip)
        mov %rsp, if_rsp(%rip)
        movq $0xe02b, if_ss(%rip)
        swap_gs gs_user, gs_kernel # keep the user's GS base, load the kernel's
        cmpb $0, masks(%rip)       # CALLBACKF_mask_events
        je 3f
        mov vcpu_info(%rip), %rcx
        movb $1, 1(%rcx)
3:      movb $1, kmode(%rip)       # committed: guest kernel mode
        incq n_bounce(%rip)
        mov save_rcx(%rip), %rcx
        mov save_r11(%rip), %r11
        mov save_rax(%rip), %rax
        mov save_rdx(%rip), %rdx
        lea if_rip(%rip), %rsp
        iretq
pf_entry:       # #PF, through this vCPU's own IDT, on IST2: err rip cs rflags rsp ss at (%rsp).
                # Xen's bounce of a guest page fault to its trap handler (the
                # slow path's xen_shim::traps::exception and create_bounce_frame).
        testb $3, 16(%rsp)         # taken in ring 0 (a fault in this code): the monitor
        jz pf_out                  # redoes the first #PF from what is saved below
        mov %rax, pf_rax(%rip)
        mov %rcx, pf_rcx(%rip)
        mov %rdx, pf_rdx(%rip)
        mov %r11, pf_r11(%rip)
        mov %cr2, %rax
        mov %rax, pf_cr2(%rip)
        mov (%rsp), %rax           # the hardware frame, kept: a fault below overwrites IST2
        mov %rax, pf_err(%rip)
        mov 8(%rsp), %rax
        mov %rax, pf_rip(%rip)
        mov 16(%rsp), %rax
        mov %rax, pf_cs(%rip)
        mov 24(%rsp), %rax
        mov %rax, pf_rflags(%rip)
        mov 32(%rsp), %rax
        mov %rax, pf_rsp(%rip)
        mov 40(%rsp), %rax
        mov %rax, pf_ss(%rip)
        cmpq $0, pf_handler(%rip)  # no trap handler: slow (the monitor reports it)
        je pf_slow
        mov vcpu_info(%rip), %rcx
        test %rcx, %rcx
        jz pf_slow
        movzbl 1(%rcx), %r11d      # the mask now (0 or 1), saved in the frame
        test %r11d, %r11d
        jz 1f
        mov $1, %r11d
        jmp 2f
1:      cmpb $0, pf_masks(%rip)    # events stay enabled in the handler and one is
        jne 2f                     # pending: slow (the monitor delivers it)
        cmpb $0, (%rcx)
        jne pf_slow
2:      mov pf_rflags(%rip), %rax  # RFLAGS less IF and IOPL, IF = events were enabled
        and $-0x3201, %rax
        mov %r11d, %edx
        xor $1, %edx
        shl $9, %edx
        or %rdx, %rax
        mov %rax, pf_frfl(%rip)
        shl $32, %r11              # the saved mask in CS bits 32-39
        mov pf_err(%rip), %rax
        cmpb $0, kmode(%rip)
        je 3f
        mov %eax, %edx             # guest kernel mode: a write to a present page may be
        and $3, %edx               # a page-table write to emulate: slow
        cmp $3, %edx
        je pf_slow
        and $-5, %rax              # the error code says kernel mode (U clear)
        mov %rax, pf_ferr(%rip)
        mov pf_cs(%rip), %rax
        and $-4, %rax              # CS with RPL 0
        mov pf_rsp(%rip), %rdx     # the frame goes on the kernel's own stack
        jmp 4f
3:      cmpq $0, kernel_cr3(%rip)  # guest user mode: on the stack_switch stack
        je pf_slow
        or $4, %rax                # the error code says user mode
        mov %rax, pf_ferr(%rip)
        mov pf_cs(%rip), %rax
        mov kernel_sp(%rip), %rdx
4:      or %r11, %rax
        mov %rax, pf_fcs(%rip)
        and $-16, %rdx
        sub $64, %rdx              # frame [rdx, rdx+64)
        movabs $0x80000000003f, %rax   # rax = rdx - (0xffff800000000000 - 63)
        add %rdx, %rax
        movabs $0x8000000003f, %rcx
        cmp %rcx, %rax             # touches slots 256-271: slow
        jb pf_slow
        cmpb $0, kmode(%rip)
        jne 5f
        mov kernel_cr3(%rip), %rax # from user mode: the kernel's page tables map its stack
        mov %rax, %cr3
5:      mov pf_rcx(%rip), %rax     # the frame: rcx r11 err rip cs rflags rsp ss
        mov %rax, (%rdx)
        mov pf_r11(%rip), %rax
        mov %rax, 8(%rdx)
        mov pf_ferr(%rip), %rax
        mov %rax, 16(%rdx)
        mov pf_rip(%rip), %rax
        mov %rax, 24(%rdx)
        mov pf_fcs(%rip), %rax
        mov %rax, 32(%rdx)
        mov pf_frfl(%rip), %rax
        mov %rax, 40(%rdx)
        mov pf_rsp(%rip), %rax
        mov %rax, 48(%rdx)
        mov pf_ss(%rip), %rax
        mov %rax, 56(%rdx)         # nothing faults from here on
        mov vcpu_info(%rip), %rcx
        mov pf_cr2(%rip), %rax
        mov %rax, 16(%rcx)         # vcpu_info.arch.cr2
        cmpb $0, pf_masks(%rip)    # a handler with TBF_INTERRUPT runs with events masked
        je 6f
        movb $1, 1(%rcx)
6:      mov pf_handler(%rip), %rax # the return frame, in the data page
        mov %rax, if_rip(%rip)
        movq $0xe033, if_cs(%rip)
        mov pf_rflags(%rip), %rax
        and $-0x77101, %rax        # less TF NT RF VM AC IOPL
        or $0x202, %rax            # IF, bit 1
        mov %rax, if_rflags(%rip)
        mov %rdx, if_rsp(%rip)
        movq $0xe02b, if_ss(%rip)
        cmpb $0, kmode(%rip)
        jne 7f
        swap_gs gs_user, gs_kernel # from user mode: keep the user's GS base, load the kernel's
        movb $1, kmode(%rip)       # committed: guest kernel mode
7:      incq n_pf(%rip)
        mov pf_rax(%rip), %rax
        mov pf_rcx(%rip), %rcx
        mov pf_rdx(%rip), %rdx
        mov pf_r11(%rip), %r11
        lea if_rip(%rip), %rsp
        iretq
pf_slow:
        mov pf_rax(%rip), %rax
        mov pf_rcx(%rip), %rcx
        mov pf_rdx(%rip), %rdx
        mov pf_r11(%rip), %r11
pf_out:
        out %al, $14               # exit: the monitor handles the #PF (its frame on IST2)
        ud2
pf_end:
vcpu_op:
        cmp $8, %rdi               # VCPUOP_set_singleshot_timer
        jne slow
        cmp vcpu_id(%rip), %rsi    # on this vCPU
        jne slow
        movabs $0x80000000000f, %rcx   # rcx = rdx - (0xffff800000000000 - 15)
        add %rdx, %rcx
        movabs $0x8000000000f, %rax
        cmp %rax, %rcx             # argument [rdx, rdx+16) touches slots 256-271: slow
        jb slow
        mov 8(%rdx), %ecx          # flags: none
        test %ecx, %ecx
        jnz slow
        mov (%rdx), %rcx           # timeout_abs_ns
        mov %rcx, %rax
        xchg %rax, deadline(%rip)  # publish (locked: a full barrier)
        cmp armed(%rip), %rcx      # before the timer thread's next look: slow
        jb slow
        incq n_timer(%rip)
        jmp ret0
stack_switch:   # RDI = kernel SS, RSI = kernel stack: kept here, read back by the monitor
        mov %rdi, kernel_ss(%rip)
        mov %rsi, kernel_sp(%rip)
        incq n_stack(%rip)
        jmp ret0
segbase:        # RDI = which, RSI = base (canonical, else slow: -EINVAL there)
        cmp $3, %rdi               # SEGBASE_GS_USER_SEL
        je gs_user_sel
        mov %rsi, %rax
        sar $47, %rax
        jz 1f
        cmp $-1, %rax
        jne slow
1:      cmp $1, %rdi               # SEGBASE_GS_USER: kept here until the return to user mode
        je 2f
        mov $0xc0000100, %ecx      # SEGBASE_FS: MSR_FS_BASE
        test %rdi, %rdi
        je 3f
        mov $0xc0000101, %ecx      # SEGBASE_GS_KERNEL: MSR_GS_BASE (kernel mode runs)
        cmp $2, %rdi
        jne slow                   # SEGBASE_GS_USER_SEL and the rest: slow
3:      mov %esi, %eax
        mov %rsi, %rdx
        shr $32, %rdx
        wrmsr
        jmp 4f
2:      mov %rsi, gs_user(%rip)
4:      incq n_segbase(%rip)
        jmp ret0
gs_user_sel:    # RSI = selector: the user GS base becomes the base of the GDT
                # descriptor it names (null: 0), as xen_shim's set_segment_base
        movzwl %si, %eax
        test $4, %al               # an LDT selector: slow
        jnz slow
        shr $3, %eax               # the GDT index; 0: a null selector, base 0
        jz 5f
        cmp $7168, %eax            # Xen's reserved entries (14 pages on): slow
        jae slow
        lea entry-0x19000(%rip), %rcx  # this vCPU's GDT copy: ring-0 page 0, 25 pages below
        mov (%rcx,%rax,8), %rdx    # the descriptor (validated when it was written)
        mov %rdx, %rax
        shr $16, %rax
        and $0xffffff, %eax        # base 23:0
        shr $56, %rdx
        shl $24, %rdx
        or %rdx, %rax              # base 31:24
5:      mov %rax, gs_user(%rip)
        incq n_segbase(%rip)
ret0:   # hypercall result 0, back to the guest kernel after its SYSCALL
        mov save_rcx(%rip), %rcx
        mov save_r11(%rip), %r11
        mov save_rdx(%rip), %rdx
        xor %eax, %eax
        sysretq
code_end:
        .org 0x1000                # the data page (per vCPU, supervisor, no-execute)
vcpu_info: .quad 0       # direct-map VA of this vCPU's vcpu_info; 0: iret and bounce paths off
kmode: .quad 0       # u8: the guest vCPU is in kernel mode (written last by a mode change)
deadline: .quad 0       # singleshot deadline set here; ~0: none
armed: .quad 0       # the timer thread looks again at this time; ~0: timer fast path off
save_rcx: .quad 0
save_r11: .quad 0
save_rsp: .quad 0
save_rax: .quad 0
n_iret: .quad 0
n_timer: .quad 0
vcpu_id: .quad 0
user_cr3: .quad 0       # the guest's user page tables; 0: none (returns to user mode slow)
kernel_cr3: .quad 0       # its kernel page tables
kernel_sp: .quad 0       # stack_switch's kernel stack
syscall_cb: .quad 0       # the syscall callback; 0: none (user SYSCALLs slow)
masks: .quad 0       # u8: the syscall callback masks events
gs_user: .quad 0       # the GS base of the mode not running (the running one is in the MSR)
gs_kernel: .quad 0
save_rdx: .quad 0
ret_rax: .quad 0
ret_rcx: .quad 0
ret_r11: .quad 0
n_bounce: .quad 0
n_iret_user: .quad 0
if_rip: .quad 0       # an IRETQ frame: rip cs rflags rsp ss
if_cs: .quad 0
if_rflags: .quad 0
if_rsp: .quad 0
if_ss: .quad 0
kernel_ss: .quad 0       # stack_switch's kernel SS
n_stack: .quad 0
n_segbase: .quad 0
pf_handler: .quad 0       # the guest's #PF handler (trap table entry 14); 0: #PF slow
pf_masks: .quad 0       # u8: that entry has TBF_INTERRUPT (events masked in the handler)
n_pf: .quad 0
pf_rax: .quad 0       # the registers at the #PF, and its hardware frame and CR2
pf_rcx: .quad 0
pf_rdx: .quad 0
pf_r11: .quad 0
pf_cr2: .quad 0
pf_err: .quad 0
pf_rip: .quad 0
pf_cs: .quad 0
pf_rflags: .quad 0
pf_rsp: .quad 0
pf_ss: .quad 0
pf_ferr: .quad 0       # the bounce frame's error code, CS and RFLAGS
pf_fcs: .quad 0
pf_frfl: .quad 0
