"""fetalgan: generative models of fetal ultrasound images on HPC clusters."""

__version__ = "0.1.0"
