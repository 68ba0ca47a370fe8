"""IPython inside the kernel: the shell subclass and the kernel's magics."""

__all__ = ()
