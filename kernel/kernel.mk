# Included by the Makefile: which kernel the module is built for and the guests boot, and
# everything of the debug kernel (issue 6).  The pin is kernel/pin.sh (configs/kernel-pin.yaml),
# the check of the build tree kernel/check-build.sh, the build itself p2pkpvm.kernel.kbuild.
# KERNEL=stock (default): the pinned Debian kernel.  KERNEL=lean: the pinned source with
# configs/kconfig/guest.config (`make lean-kernel`, cached), guests boot faster.  KERNEL=debug:
# the sanitizer build of `make kernel`.  The module of a built kernel goes to
# out/<kernel>-module (p2pkp.ko in the work tree stays the stock build).  An explicit KDIR=
# still wins for the stock build.
KERNEL   ?= stock
ifeq ($(filter stock lean debug,$(KERNEL)),)
$(error KERNEL=$(KERNEL): expected stock, lean or debug)
endif
STOCK_KDIR := /lib/modules/$(ABI)/build
DEBUG_KDIR  = $(shell $(CLI) kernel path || echo debug-kernel-not-built)
LEAN_KDIR   = $(shell $(CLI) kernel path --flavour guest || echo lean-kernel-not-built)
ifeq ($(KERNEL)$(origin KDIR),debugundefined)
KDIR      = $(DEBUG_KDIR)
endif
ifeq ($(KERNEL)$(origin KDIR),leanundefined)
KDIR      = $(LEAN_KDIR)
endif
KDIR     ?= $(STOCK_KDIR)
ifeq ($(KERNEL),stock)
VM_TEST_BUILD := all crashme
else
VM_TEST_BUILD := tools bench-tools $(KERNEL)-module $(KERNEL)-crashme
endif

# Builds the pinned linux-source with configs/kconfig/{guest,debug}.config into
# $(P2PKP_CACHE:-/var/cache/p2pkp)/kernel, keyed by source version + config hash: a second
# run is instant.
kernel: venv
	$(CLI) kernel build

# The lean guest kernel: configs/kconfig/guest.config only (KERNEL=lean), cached the same way.
lean-kernel: venv
	$(CLI) kernel build --flavour guest

# The module and crashme built against a built kernel's tree (debug, lean) from copies of
# their sources, so that the stock p2pkp.ko / crashme.ko in the work tree stay as they are.
KDIR_OF_debug = $(DEBUG_KDIR)
KDIR_OF_lean  = $(LEAN_KDIR)
debug-module lean-module: %-module: p2pkp.c p2pkp.h p2pkp_compat.h Kbuild
	@kernel/check-build.sh $(KDIR_OF_$*)
	mkdir -p out/$*-module
	cp p2pkp.c p2pkp.h p2pkp_compat.h Kbuild out/$*-module/
	$(MAKE) -C $(KDIR_OF_$*) M=$(CURDIR)/out/$*-module modules

debug-crashme lean-crashme: %-crashme: vmtests/crashme/crashme.c
	@kernel/check-build.sh $(KDIR_OF_$*)
	mkdir -p out/$*-crashme
	cp vmtests/crashme/crashme.c vmtests/crashme/Kbuild out/$*-crashme/
	$(MAKE) -C $(KDIR_OF_$*) M=$(CURDIR)/out/$*-crashme modules
