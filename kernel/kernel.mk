# Included by the Makefile: which kernel the module is built for and the guests boot, and
# everything of the debug kernel (issue 6).  The pin is kernel/pin.sh (configs/kernel-pin.yaml),
# the check of the build tree kernel/check-build.sh, the build itself p2pkpvm.kernel.kbuild.
# KERNEL=stock (default): the pinned Debian kernel; KERNEL=debug: the cached sanitizer build
# of `make kernel` (its module goes to out/debug-module, p2pkp.ko stays the stock build).
# An explicit KDIR= still wins for the stock build.
KERNEL   ?= stock
ifeq ($(filter stock debug,$(KERNEL)),)
$(error KERNEL=$(KERNEL): expected stock or debug)
endif
STOCK_KDIR := /lib/modules/$(ABI)/build
DEBUG_KDIR  = $(shell $(CLI) kernel path || echo debug-kernel-not-built)
ifeq ($(KERNEL)$(origin KDIR),debugundefined)
KDIR      = $(DEBUG_KDIR)
endif
KDIR     ?= $(STOCK_KDIR)
ifeq ($(KERNEL),debug)
VM_TEST_BUILD := tools bench-tools debug-module debug-crashme
else
VM_TEST_BUILD := all crashme
endif

# Builds the pinned linux-source with configs/kconfig/{guest,debug}.config into
# $(P2PKP_CACHE:-/var/cache/p2pkp)/kernel, keyed by source version + config hash: a second
# run is instant.
kernel: venv
	$(CLI) kernel build

# The module and crashme built against the debug tree from copies of their sources, so that
# the stock p2pkp.ko / crashme.ko in the work tree stay as they are.
debug-module: p2pkp.c p2pkp.h Kbuild
	@kernel/check-build.sh $(DEBUG_KDIR)
	mkdir -p out/debug-module
	cp p2pkp.c p2pkp.h Kbuild out/debug-module/
	$(MAKE) -C $(DEBUG_KDIR) M=$(CURDIR)/out/debug-module modules

debug-crashme: vmtests/crashme/crashme.c
	@kernel/check-build.sh $(DEBUG_KDIR)
	mkdir -p out/debug-crashme
	cp vmtests/crashme/crashme.c vmtests/crashme/Kbuild out/debug-crashme/
	$(MAKE) -C $(DEBUG_KDIR) M=$(CURDIR)/out/debug-crashme modules
