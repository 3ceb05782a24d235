"""What Fashion-MNIST is: its four IDX files and its class names.

Where the files come from and the SHA-256 of each file's decompressed bytes live in
``datasets/fashion-mnist.yaml`` (:class:`pipeline.params.DatasetSpec`), which the ingest stage depends
on: the identity of the data is versioned with the code, apart from the params users vary.
"""

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
IMAGE_SIDE = 28  # every image is IMAGE_SIDE x IMAGE_SIDE grayscale pixels

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
