"""Data: the real PadChest label table, the phantom renderer, real images, prompts, datasets."""
