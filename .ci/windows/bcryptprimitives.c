/*
 * A stand-in for Windows' bcryptprimitives.dll, for running keeper.exe under
 * Wine 8 only (real Windows 10+ has the DLL; Wine 9 added it).
 *
 * Rust's standard library takes its random numbers from ProcessPrng in
 * bcryptprimitives.dll; Wine 8 has no such DLL, so keeper.exe does not even
 * start there. This one exports ProcessPrng and fills the buffer from
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 *
 * Built by .ci/wine-check with: x86_64-w64-mingw32-gcc -shared -O2
 *   -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 * and put beside keeper.exe, where Windows' loader looks first.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
