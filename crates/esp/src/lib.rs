//! EFI system partition images (FAT) built from a list of host files.
