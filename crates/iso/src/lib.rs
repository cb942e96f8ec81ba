//! Hybrid ISO 9660 writer: El Torito BIOS + UEFI, MBR/GPT system area, Rock Ridge, streaming.
