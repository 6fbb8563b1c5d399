/*
 * P11KeyStoreCheck - Java's own PKCS#11 provider (SunPKCS11) on hsmd's module,
 * as a Java application would use it: the token as a KeyStore, each private
 * key entry with its certificate, and signatures made with the entry's key
 * and checked with the certificate's public key by Java's own providers.
 *
 *   java P11KeyStoreCheck.java CONFIG PIN MESSAGE
 *
 * Prints one line per entry ("entry ALIAS key=... cert=... subject=..."), then
 * one per key entry signed ("signed ALIAS ALG verified=true|false"), for the
 * test to check.
 */
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.cert.X509Certificate;
import java.util.Collections;

public class P11KeyStoreCheck {
	public static void main(String[] args) throws Exception {
		Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
		KeyStore ks = KeyStore.getInstance("PKCS11", p);
		ks.load(null, args[1].toCharArray());
		byte[] msg = args[2].getBytes(StandardCharsets.UTF_8);
		for (String alias : Collections.list(ks.aliases())) {
			X509Certificate cert = (X509Certificate) ks.getCertificate(alias);
			System.out.println("entry " + alias + " key=" + ks.isKeyEntry(alias) + " cert="
			                   + (cert != null) + " subject="
			                   + (cert != null ? cert.getSubjectX500Principal().getName() : "-"));
			if (!ks.isKeyEntry(alias) || cert == null)
				continue;
			PrivateKey key = (PrivateKey) ks.getKey(alias, null);
			String alg = key.getAlgorithm().equals("RSA") ? "SHA256withRSA" : "SHA256withECDSA";
			Signature s = Signature.getInstance(alg, p);
			s.initSign(key);
			s.update(msg);
			byte[] sig = s.sign();
			Signature v = Signature.getInstance(alg); /* Java's own, not the token's */
			v.initVerify(cert.getPublicKey());
			v.update(msg);
			System.out.println("signed " + alias + " " + alg + " verified=" + v.verify(sig));
		}
	}
}
